"""The registry of strategies: name -> Strategy. A new method is a new module and one line here."""

from models.errors import ModelConfigError
from models.strategies.base import BN_MODES, Strategy, StrategyOptions
from models.strategies.baselines import FineTune, LastK, LinearProbe
from models.strategies.spottune import GlobalK, SpotTune, SpotTuneGlobal

STRATEGIES = {
    strategy.name: strategy
    for strategy in (
        FineTune(),
        LinearProbe(),
        LastK(),
        SpotTune(),
        SpotTuneGlobal(),
        GlobalK(),
    )
}


def get_strategy(name):
    """The registered strategy called `name`, or a one-line ModelConfigError listing the valid names."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ModelConfigError(
            f"unknown strategy {name!r}; choose one of: {', '.join(sorted(STRATEGIES))}"
        ) from None


__all__ = ["BN_MODES", "STRATEGIES", "Strategy", "StrategyOptions", "get_strategy"]
