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
    as tf.distribute.MultiWorkerMirroredStrategy does.
    """
    if name == "none":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown distribution strategy {name!r}")
