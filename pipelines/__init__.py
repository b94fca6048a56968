"""Datasets as tf.data: TFDS (Visual Decathlon), DTD, image folders, the embedded default.

    from pipelines import load_dataset
    bundle = load_dataset("folder", data_dir="photos/")
    train = bundle.batches("train", batch_size=64, training=True, image_size=72)

Importing this package is cheap: TensorFlow is imported when `load_dataset` or `DatasetBundle` is first used.
"""

from pipelines.errors import DataError, DataWarning

__all__ = ["DATASET_NAMES", "DataError", "DataWarning", "DatasetBundle", "SkippedFile", "load_dataset"]

_LAZY = {
    "load_dataset": "pipelines.loader",
    "DATASET_NAMES": "pipelines.loader",
    "DatasetBundle": "pipelines.bundle",
    "SkippedFile": "pipelines.bundle",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
