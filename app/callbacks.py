"""Keras callbacks used by `app.train`: throughput measurement, learning-rate logging, a resume
checkpoint written whole, and history.csv written whole."""

import json
import os
import time

import keras

from rundir.layout import read_history, replacing, write_history


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
    """Adds the optimiser's current learning rate to the epoch logs (so TensorBoard plots it): the
    pretrained layers' as `learning_rate`, and with parameter groups the new layers' as `head_learning_rate`."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["learning_rate"] = current_rate(self.model.optimizer)
        groups = parameter_groups(self.model.optimizer)
        if groups is not None:
            logs["head_learning_rate"] = current_rate(groups.secondary)


def current_rate(optimizer):
    """The learning rate `optimizer` applies at its current step, as a float."""
    rate = optimizer.learning_rate
    if callable(rate):
        rate = rate(optimizer.iterations)
    return float(keras.ops.convert_to_numpy(rate))


def parameter_groups(optimizer):
    """The network's two-group optimizer (`app.trainer.network_optimizer`) inside `optimizer`, or None."""
    while optimizer is not None and hasattr(optimizer, "is_secondary"):
        if optimizer.name == "parameter_groups":
            return optimizer
        optimizer = optimizer.main
    return None


class WholeBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`keras.callbacks.BackupAndRestore` whose checkpoint is written whole or not at all.

    Keras writes backup/latest.weights.h5 in place, so a write that fails half-way (a full disk, a
    kill) leaves a file no later `--resume` can read. Here the weights and the epoch go to temporary
    files first and replace the last checkpoint only once both are complete (`rundir.layout.replacing`):
    a failed write leaves the previous epoch's checkpoint as it was.

    Put it first among the callbacks (it restores the state at the start of fit); with `saver()`
    placed last, the checkpoint of an epoch is written after every other callback's end of that
    epoch (history.csv's row above all), so a checkpoint never marks an epoch done whose row is missing.
    """

    _deferred = False

    def saver(self):
        """A callback that writes this checkpoint at the end of each epoch: put it last."""
        self._deferred = True
        return _SaveCheckpoint(self)

    def on_epoch_end(self, epoch, logs=None):
        if not self._deferred:
            return super().on_epoch_end(epoch, logs)
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        metadata = json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen})
        # The weights replace theirs first: a stop between the two renames repeats an epoch, never skips one.
        with replacing(self._training_metadata_path) as epoch, replacing(self._weights_path) as weights:
            self.model.save_weights(filepath=weights, overwrite=True)
            with open(epoch, "w") as f:
                f.write(metadata)


class _SaveCheckpoint(keras.callbacks.Callback):
    def __init__(self, backup):
        super().__init__()
        self.backup = backup

    def on_epoch_end(self, epoch, logs=None):
        self.backup._save_model()


def resume_epoch(backup_dir):
    """The epoch a fit resumed from `backup_dir` starts at (what `BackupAndRestore` restores), 0 without a checkpoint."""
    metadata = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.isfile(os.path.join(backup_dir, "latest.weights.h5")) or not os.path.isfile(metadata):
        return 0
    with open(metadata) as f:
        return int(json.load(f)["epoch"])


class HistoryFile(keras.callbacks.Callback):
    """history.csv: one row per epoch (the epoch logs of every callback before it), rewritten whole
    (`rundir.layout.replacing`) at the end of each epoch, so a failed write leaves the last complete file.

    A resumed fit starting at `first_epoch` keeps the earlier session's rows of the epochs before it
    (and drops any of a later epoch whose checkpoint was never written: that epoch runs again), so
    `history` is the whole run's, epoch by epoch.
    """

    def __init__(self, path, first_epoch=0):
        super().__init__()
        self.path = path
        self.rows = [row for row in read_history(path) if row["epoch"] < int(first_epoch)]

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": int(epoch)}
        for key, value in (logs or {}).items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                continue
        self.rows.append(row)
        write_history(self.path, self.rows)

    @property
    def history(self):
        """{key: [value of each epoch, in order]} over the whole run (None where an epoch lacks a key)."""
        keys = sorted({key for row in self.rows for key in row} - {"epoch"})
        return {key: [row.get(key) for row in self.rows] for key in keys}

    @property
    def epochs(self):
        return [row["epoch"] for row in self.rows]
