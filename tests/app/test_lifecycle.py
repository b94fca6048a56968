"""app.training.train drives a strategy through its hooks, in order, and names no strategy itself."""

import json

import keras

from app.training import train
from models import strategies
from models.strategies.baselines import FineTune
from rundir.config import TrainConfig


class Recording(FineTune):
    """Full fine-tuning that records which hooks ran, with what."""

    name = "recording"
    files = {"recording.txt": "the splits finish saw"}

    def __init__(self):
        self.calls = []

    def optimizer(self, network, network_optimizer, options):
        self.calls.append("optimizer")
        return network_optimizer

    def callbacks(self, context):
        self.calls.append("callbacks")
        calls = self.calls

        class Epochs(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                calls.append(f"epoch {epoch}")

        return [Epochs()]

    def before_fit(self, context):
        self.calls.append("before_fit")

    def after_fit(self, context):
        self.calls.append("after_fit")

    def finish(self, context):
        self.calls.append("finish")
        with open(context.path("recording.txt"), "w") as f:
            f.write(",".join(context.splits))
        return {"recording": {"accuracy_seen": dict(context.accuracy)}}


def test_train_calls_the_hooks_in_order_and_merges_finish_into_metrics(tmp_path, monkeypatch):
    strategy = Recording()
    monkeypatch.setitem(strategies._strategies(), strategy.name, strategy)
    run = tmp_path / "run"
    metrics = train(TrainConfig(strategy="recording", epochs=2, image_size=16, batch_size=64, warmup_epochs=0), str(run), verbose=0)
    assert strategy.calls == ["optimizer", "callbacks", "before_fit", "epoch 0", "epoch 1", "after_fit", "finish"]
    assert metrics["recording"]["accuracy_seen"] == metrics["accuracy"]  # finish sees the evaluated accuracy
    assert json.loads((run / "metrics.json").read_text())["recording"] == metrics["recording"]
    assert (run / "recording.txt").read_text() == ",".join(metrics["accuracy"])
    # the run directory holds only files its contract names
    from models.regularizers import get_regularizer
    from rundir.layout import run_files

    assert {p.name for p in run.iterdir()} <= set(run_files(strategy, get_regularizer("none")))


def test_a_strategy_cannot_write_a_file_it_does_not_declare(tmp_path):
    import pytest

    from rundir.layout import declared_path, run_files

    files = run_files(Recording())
    assert declared_path(str(tmp_path), "recording.txt", files) == str(tmp_path / "recording.txt")
    assert declared_path(str(tmp_path), "logs/routing", files) == str(tmp_path / "logs/routing")
    with pytest.raises(ValueError, match="not a declared file"):
        declared_path(str(tmp_path), "surprise.png", files)
