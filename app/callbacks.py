"""Keras callbacks used by `app.train`: throughput measurement, learning-rate logging, a resume
checkpoint written whole."""

import json
import os
import time

import keras

from rundir.layout import replacing


class ThroughputMeter(keras.callbacks.Callback):
    """Measures training images per second, epoch by epoch, excluding validation time.

    The first epoch includes graph tracing, so `images_per_second` reports the median over the
    epochs after the first when there are any.

    Args:
        images_per_epoch: number of training images seen in one epoch.
    """

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = int(images_per_epoch)
        self.epoch_rates = []
        self._start = None
        self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._train_seconds if self._train_seconds is not None else time.perf_counter() - self._start
        self.epoch_rates.append(self.images_per_epoch / max(seconds, 1e-9))
        if logs is not None:
            logs["images_per_second"] = self.epoch_rates[-1]

    @property
    def images_per_second(self):
        rates = self.epoch_rates[1:] or self.epoch_rates
        if not rates:
            return None
        ordered = sorted(rates)
        return ordered[len(ordered) // 2]


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimiser's current learning rate to the epoch logs (so TensorBoard plots it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        rate = optimizer.learning_rate
        if callable(rate):
            rate = rate(optimizer.iterations)
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


class WholeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose checkpoint is written whole or not at all.

    Keras writes backup/latest.weights.h5 in place, so a write that fails half-way (a full disk, a
    kill) leaves a file no later `--resume` can read. Here the weights and the epoch go to temporary
    files first and replace the last checkpoint only once both are complete (`rundir.layout.replacing`):
    a failed write leaves the previous epoch's checkpoint as it was.
    """

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        metadata = json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen})
        # The weights replace theirs first: a stop between the two renames repeats an epoch, never skips one.
        with replacing(self._training_metadata_path) as epoch, replacing(self._weights_path) as weights:
            self.model.save_weights(filepath=weights, overwrite=True)
            with open(epoch, "w") as f:
                f.write(metadata)
