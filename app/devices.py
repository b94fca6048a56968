"""Devices and tf.distribute strategies for training."""

import tensorflow as tf


def split_cpu(virtual_cpus):
    """Split the CPU into `virtual_cpus` logical devices (to try MirroredStrategy on one machine).

    Must run before TensorFlow initialises its devices, so call it before building any tensor.
    """
    if virtual_cpus <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * virtual_cpus)


def distribution_strategy(name):
    """The tf.distribute strategy for `--distribute`: none, mirrored, or multiworker.

    `mirrored` replicates the model on every GPU, or on every logical CPU device when there is no
    GPU (see `split_cpu`). `multiworker` reads the cluster from the TF_CONFIG environment variable,
    as tf.distribute.MultiWorkerMirroredStrategy does, and shards datasets by example
    (`ShardedByExample`).

    Either way `--batch-size` is the global batch: each of the R replicas computes the gradient of
    `batch / R` images and the gradients are summed over replicas (Keras scales the loss by 1/R), so
    one step is the step one process takes on the whole batch, and the learning rate of a
    one-process run stays right for the same global batch. Growing the global batch with the
    replicas (batch x R) calls for the linear rule (lr x R, with the warm-up) of Goyal et al. 2017.
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        return sharded_by_example()
    raise ValueError(f"unknown distribution strategy {name!r}")


def sharded_by_example():
    """A `MultiWorkerMirroredStrategy` whose datasets are sharded by example (see `ShardedByExample`)."""

    class ShardedByExample(tf.distribute.MultiWorkerMirroredStrategy):
        """`MultiWorkerMirroredStrategy` that shards every distributed dataset by example (DATA).

        Each global batch is split into per-replica slices, worker i keeping slice i, so the images of
        a step are those of one process with the same global batch, in the same order, with the same
        per-image augmentation (each image draws from its own seed). The file-based policy (FILE)
        would give each worker its own files and another order; tf.data's AUTO falls back to DATA for
        our pipelines anyway (they start from a list of paths or from TFDS records read whole), with a
        warning. The cost: every worker reads and decodes the whole split (cached in memory when it fits).
        """

        def experimental_distribute_dataset(self, dataset, options=None):
            return super().experimental_distribute_dataset(by_example(dataset), options)

    return ShardedByExample()


def by_example(dataset):
    """`dataset` with tf.data's DATA auto-shard policy (shard by example under a multi-worker strategy)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
