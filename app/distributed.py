"""What a run under a tf.distribute strategy needs beside the plain one-process run.

- `SynchronizedBatchNorm`: while fit runs with more than one replica, the BatchNorm layers that
  train compute their batch statistics over the global batch (an all-reduce across replicas), so a
  step is the step one process takes on the same global batch; the saved model keeps plain BatchNorm.
- `finish_worker`: a non-chief worker's own directory (`app.cluster.worker_directory`) is removed
  when the run has finished (the chief's run directory holds the run).
"""

import os
import shutil

import keras


def batch_norm_layers(model):
    """Every `keras.layers.BatchNormalization` inside `model` (nested models included)."""
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, keras.layers.BatchNormalization)]


class SynchronizedBatchNorm(keras.callbacks.Callback):
    """Sets `synchronized=True` on the BatchNorm layers of `network` for the time of fit (R > 1 replicas).

    Keras reads the flag when it traces the training step, after `on_train_begin`. Without it each
    replica normalises with the statistics of its own batch / R images: another computation than
    one process's, and a noisy one for small per-replica batches.
    """

    def __init__(self, network, replicas):
        super().__init__()
        self.layers = batch_norm_layers(network) if int(replicas) > 1 else []
        self._before = []

    def on_train_begin(self, logs=None):
        self._before = [layer.synchronized for layer in self.layers]
        for layer in self.layers:
            layer.synchronized = True

    def on_train_end(self, logs=None):
        for layer, before in zip(self.layers, self._before):
            layer.synchronized = before


def callbacks(network, distribution):
    """The callbacks a fit under `distribution` adds (none for one replica)."""
    replicas = int(distribution.num_replicas_in_sync)
    return [SynchronizedBatchNorm(network, replicas)] if replicas > 1 else []


def finish_worker(directory, distribute):
    """Remove a finished non-chief worker's own directory when it is the default one (a `--worker-dir`
    given by the user stays); the chief's (the run directory) stays."""
    from app.cluster import is_chief, worker_directory

    if distribute != "multiworker" or is_chief() or os.path.abspath(directory) != os.path.abspath(worker_directory()):
        return
    shutil.rmtree(directory, ignore_errors=True)
