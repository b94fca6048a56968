"""What a run under a tf.distribute strategy needs beside the plain one-process run.

- `SynchronizedBatchNorm`: while fit runs with more than one replica, the BatchNorm layers that
  train compute their batch statistics over the global batch (an all-reduce across replicas), so a
  step is the step one process takes on the same global batch; the saved model keeps plain BatchNorm.
- `ChiefStateWins`: at the start of fit every worker takes the chief's state (weights, optimizer,
  loss terms, epoch), so workers that restored different checkpoints (one killed between the
  chief's write and its own, a replaced machine with none) go on from the chief's last finished epoch.
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


class ChiefStateWins(keras.callbacks.Callback):
    """Under a multi-worker strategy, broadcasts the chief's state to every worker when fit begins.

    Put it after the `BackupAndRestore` callback: each worker restores its own checkpoint (they write
    them each in their own directory), then every variable of the trainer (network, optimizer, loss
    terms such as the L2-SP w0) and the first epoch are replaced by the chief's, in one all-reduce.
    """

    def __init__(self, distribution):
        super().__init__()
        self.distribution = distribution

    def on_train_begin(self, logs=None):
        epoch = broadcast_from_chief(self.distribution, self.model, int(getattr(self.model, "_initial_epoch", None) or 0))
        self.model._initial_epoch = epoch  # what keras.callbacks.BackupAndRestore sets


def in_multi_worker_mode(distribution):
    """True under a MultiWorkerMirroredStrategy that spans more than one worker."""
    import tensorflow as tf

    check = getattr(distribution.extended, "_in_multi_worker_mode", lambda: False)
    return isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy) and check()


def broadcast_from_chief(distribution, model, epoch):
    """Assign the chief's values of `model.variables` (and of the optimizer's) on every worker; returns the chief's `epoch`.

    One all-reduce of every value flattened into a float64 vector, zero on every replica but the
    first (the chief's): the sum is the chief's vector.
    """
    import tensorflow as tf

    variables = list(model.variables)
    if model.optimizer is not None:
        variables += [v for v in model.optimizer.variables if all(v is not w for w in variables)]
    values = [tf.reshape(tf.cast(v.value, tf.float64), [-1]) for v in variables]
    flat = tf.concat([tf.constant([float(epoch)], tf.float64)] + values, axis=0)

    def keep_the_chiefs(vector):
        context = tf.distribute.get_replica_context()
        mask = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float64)
        return context.all_reduce(tf.distribute.ReduceOp.SUM, vector * mask)

    summed = distribution.experimental_local_results(distribution.run(keep_the_chiefs, args=(flat,)))[0]
    offset = 1
    for variable in variables:
        size = int(tf.size(variable.value))
        variable.assign(tf.cast(tf.reshape(summed[offset : offset + size], variable.shape), variable.dtype))
        offset += size
    return int(round(float(summed[0])))


def callbacks(network, distribution):
    """The callbacks a fit under `distribution` adds (none for one replica)."""
    replicas = int(distribution.num_replicas_in_sync)
    if replicas == 1:
        return []
    chosen = [SynchronizedBatchNorm(network, replicas)]
    if in_multi_worker_mode(distribution):
        chosen.append(ChiefStateWins(distribution))
    return chosen


def finish_worker(directory, distribute):
    """Remove a finished non-chief worker's own directory when it is the default one (a `--worker-dir`
    given by the user stays); the chief's (the run directory) stays."""
    from app.cluster import is_chief, worker_directory

    if distribute != "multiworker" or is_chief() or os.path.abspath(directory) != os.path.abspath(worker_directory()):
        return
    shutil.rmtree(directory, ignore_errors=True)
