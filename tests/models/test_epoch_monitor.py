"""The monitor base every method's per-epoch TensorBoard logging stands on, and the figure helpers."""

import keras
import numpy as np
import tensorflow as tf

from models.epoch_monitor import EpochMonitor
from models.figures import figure_png_bytes, pyplot, save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _figure():
    figure, axis = pyplot().subplots(figsize=(2, 2), dpi=50)
    axis.imshow(np.eye(3))
    return figure


class _Counter(EpochMonitor):
    """Logs the epoch count, an image, and nothing at all on the second epoch."""

    def __init__(self, log_dir):
        super().__init__(log_dir)
        self.calls = 0

    def measure(self):
        self.calls += 1
        if self.calls == 2:
            return None
        return {"scalars": {"count/calls": float(self.calls)}, "images": {"count/image": figure_png_bytes(_figure())}, "logs": {"calls": float(self.calls)}}


def _tags(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto).flat[0]) if tag == "count/calls" else None) for e in events.Tensors(tag)] for tag in events.Tags()["tensors"]}


def test_monitor_writes_scalars_images_and_epoch_logs_and_skips_an_epoch_with_nothing(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    monitor = _Counter(str(tmp_path / "count"))
    history = model.fit(np.ones((4, 2)), np.zeros((4, 1)), epochs=3, verbose=0, callbacks=[monitor])
    assert monitor.calls == 3
    # history.csv's column: epochs without a value are missing from Keras' history, so 2 entries
    assert history.history["calls"] == [1.0, 3.0]
    tags = _tags(tmp_path / "count")
    assert tags["count/calls"] == [(0, 1.0), (2, 3.0)]
    assert [step for step, _ in tags["count/image"]] == [0, 2]


def test_figures_are_written_as_png_and_as_png_bytes(tmp_path):
    path = tmp_path / "figure.png"
    save_figure(_figure(), path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    png = figure_png_bytes(_figure())
    assert png[:8] == PNG_MAGIC and tf.io.decode_png(png, channels=4).shape[-1] == 4
    assert pyplot().get_fignums() == []  # both figures were closed
