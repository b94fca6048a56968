"""The README's "Adding a method" example works as written: one class plus one registry line."""

import pathlib
import re

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]


def readme_strategy_class():
    text = (REPO / "README.md").read_text()
    section = text[text.index("### Adding a method") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace["HeadFirst"]


def test_the_readme_strategy_trains_after_one_registry_line(tmp_path, monkeypatch):
    from app.train import build_parser
    from app.training import train
    from models import strategies
    from rundir.config import TrainConfig

    strategy = readme_strategy_class()()
    monkeypatch.setitem(strategies._strategies(), strategy.name, strategy)  # the registry line
    assert "--probe-epochs" in build_parser().format_help()

    seen = {}
    original = strategy.before_fit

    def before_fit(context):
        original(context)
        seen["classifier"] = np.array(context.network.get_layer("classifier").kernel)
        seen["stem"] = np.array(context.network.get_layer("stem").weights[0])

    monkeypatch.setattr(strategy, "before_fit", before_fit)
    config = TrainConfig(strategy="head_first", epochs=1, image_size=16, batch_size=64, extra={"probe_epochs": 1})
    metrics = train(config, str(tmp_path / "run"), verbose=0)
    assert (tmp_path / "run" / "model.keras").is_file() and metrics["epochs"] == 1
    from models.backbones import build_backbone

    pretrained_stem = np.array(build_backbone("resnet20").stem.weights[0])
    np.testing.assert_array_equal(seen["stem"], pretrained_stem)  # the head-only phase left the stem alone
    assert metrics["trainable_parameters"] > seen["classifier"].size  # then every layer trained
