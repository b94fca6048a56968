"""`ArrayBundle`: a dataset held as uint8 arrays already in evaluation preprocessing (a run directory's
sample.npz), with the `DatasetBundle` interface `evaluate` and `export` use: facts and `batches()`."""

import dataclasses

import numpy as np

from pipelines.errors import DataError
from pipelines.folders import canonical_split


@dataclasses.dataclass
class ArrayBundle:
    """Labelled images as arrays, evaluation only.

    Attributes:
        name: where the images come from (for messages and reports).
        class_names: the class names, in label order.
        image_size: the side S of every image; `batches` serves only that size.
        images: {split: uint8 [n, S, S, 3]}.
        labels: {split: int [n]}.
        source: a description (the file the arrays came from).
    """

    name: str
    class_names: list
    image_size: int
    images: dict
    labels: dict
    source: str = ""
    policy: str = "arrays"
    skipped: tuple = ()

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def split_sizes(self):
        return {split: int(len(labels)) for split, labels in self.labels.items()}

    @property
    def labelled_splits(self):
        return tuple(split for split, labels in self.labels.items() if len(labels) and np.all(np.asarray(labels) >= 0))

    def num_batches(self, split, batch_size, drop_remainder=False):
        count = self.split_sizes[self._split(split)]
        return count // int(batch_size) if drop_remainder else -(-count // int(batch_size))

    def _split(self, split):
        key = canonical_split(split) or split
        if key not in self.labels:
            raise DataError(f"{self.name} holds no {split!r} images (it holds {', '.join(self.labels) or 'none'}); pass --data-dir with the run's data")
        return key

    def batches(self, split, batch_size, training=False, image_size=None, seed=0, shuffle=None, drop_remainder=False, cache=None, epochs=None):
        """(float32 [B, S, S, 3] in [0, 255], int32 [B]) batches of `split`, in order or (`shuffle`) a seeded shuffle."""
        import tensorflow as tf

        key = self._split(split)
        if training or epochs is not None:
            raise DataError(f"{self.name} holds evaluation images only; training needs the data: pass --data-dir")
        if image_size is not None and int(image_size) != int(self.image_size):
            raise DataError(f"{self.name} holds {self.image_size} px images, not {image_size} px; pass --data-dir with the run's data")
        images, labels = self.images[key], np.asarray(self.labels[key]).astype(np.int32)
        if shuffle:
            order = np.random.default_rng(int(seed)).permutation(len(labels))
            images, labels = images[order], labels[order]
        ds = tf.data.Dataset.from_tensor_slices((images, labels))
        ds = ds.map(lambda image, label: (tf.cast(image, tf.float32), label))
        return ds.batch(int(batch_size), drop_remainder=drop_remainder)
