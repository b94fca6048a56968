"""The registry of strategies: name -> Strategy. A new method is a new package and one line here."""

from models.errors import ModelConfigError
from models.flags import Flag
from models.strategies.base import BN_MODES, RunContext, Strategy, StrategyOptions

_REGISTRY = {}


def _strategies():
    """{name: Strategy}, filled on first use (the method packages import `models.strategies.base`,
    so importing them here at import time would be circular)."""
    if not _REGISTRY:
        from models.adafilter.strategy import AdaFilter
        from models.spottune.strategies import GlobalK, SpotTune, SpotTuneGlobal
        from models.fitnets.strategy import FitNets
        from models.hybrid_forward.strategy import HybridForward
        from models.l2t_ww.strategy import L2TWW
        from models.strategies.baselines import FineTune, LastK, LinearProbe, LinearProbeThenFineTune
        from models.transtailor.strategy import TransTailor

        for strategy in (
            FineTune(),
            LinearProbe(),
            LastK(),
            LinearProbeThenFineTune(),
            SpotTune(),
            SpotTuneGlobal(),
            GlobalK(),
            AdaFilter(),
            TransTailor(),
            FitNets(),
            L2TWW(),
            HybridForward(),
        ):
            _REGISTRY[strategy.name] = strategy
    return _REGISTRY


def __getattr__(name):
    if name == "STRATEGIES":
        return _strategies()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_strategy(name):
    """The registered strategy called `name`, or a one-line ModelConfigError listing the valid names."""
    try:
        return _strategies()[name]
    except KeyError:
        raise ModelConfigError(
            f"unknown strategy {name!r}; choose one of: {', '.join(sorted(_strategies()))}"
        ) from None


def strategy_flags():
    """[(flag, [names of the strategies that read it])] of every registered strategy, each flag once, in registry order."""
    flags, users = {}, {}
    for strategy in _strategies().values():
        for flag in strategy.flags:
            flags.setdefault(flag.name, flag)
            users.setdefault(flag.name, []).append(strategy.name)
    return [(flags[name], users[name]) for name in flags]


def check_strategy_flags(extra):
    """Raise ModelConfigError (one line) for a bad value of any registered strategy's flag in `extra`."""
    for flag, _ in strategy_flags():
        flag.check(extra.get(flag.name))


__all__ = [
    "BN_MODES",
    "STRATEGIES",
    "Flag",
    "RunContext",
    "Strategy",
    "StrategyOptions",
    "check_strategy_flags",
    "get_strategy",
    "strategy_flags",
]
