"""`DatasetBundle`: a loaded dataset's facts and its tf.data input pipelines."""

import dataclasses
import math
import typing

import tensorflow as tf

from pipelines.errors import DataError
from pipelines.folders import canonical_split
from pipelines.preprocessing import Preprocessing, estimate_cached_bytes

AUTOTUNE = tf.data.AUTOTUNE

# Splits whose deterministic part (decoded and resized images) takes less than this are cached in memory.
DEFAULT_CACHE_LIMIT_BYTES = 1 << 30
# Shuffle buffer when the split is not cached (the whole split when it is, or when files are shuffled).
SHUFFLE_BUFFER = 8192


class SkippedFile(typing.NamedTuple):
    """An image file that cannot be read, and why."""

    path: str
    reason: str


@dataclasses.dataclass
class FileSplit:
    """A split stored as image files: the files, the paths to read (converted copies in the cache for formats
    TensorFlow misreads), int labels and (height, width) sizes from the validation scan."""

    sources: list
    paths: list
    labels: list
    sizes: list

    def __len__(self):
        return len(self.paths)

    def cached_bytes(self, prep, training):
        return prep.cached_bytes(self.sizes, training)

    def dataset(self, shuffle, seed, reshuffle=True):
        """(uint8 [h, w, 3], int32) in file order, shuffled (whole split) when asked; decoding is parallel.

        With `reshuffle` False every pass has the one order `seed` gives (`batches(epochs=...)` makes one
        pipeline per epoch, each with its epoch's seed).
        """
        ds = tf.data.Dataset.from_tensor_slices(
            (tf.constant(self.paths, tf.string), tf.constant(self.labels, tf.int32))
        )
        if shuffle:
            ds = ds.shuffle(len(self.paths), seed=seed, reshuffle_each_iteration=reshuffle)
        ds = ds.map(lambda path, label: (decode_image(tf.io.read_file(path)), label), num_parallel_calls=AUTOTUNE)
        return ds


@dataclasses.dataclass
class TFDSSplit:
    """A split of a prepared TFDS builder (features `image` and `label`)."""

    builder: typing.Any
    split: str
    num_examples: int

    def __len__(self):
        return self.num_examples

    def cached_bytes(self, prep, training):
        return estimate_cached_bytes(prep, self.num_examples, training)

    def dataset(self, shuffle, seed, reshuffle=True):
        """(uint8 [h, w, 3], int32); with `shuffle`, the files are read in a `seed`ed order, reshuffled on
        every pass (`batches(epochs=...)` reads them in order and shuffles a buffer with its epoch's seed)."""
        import tensorflow_datasets as tfds

        read_config = tfds.ReadConfig(shuffle_seed=seed, shuffle_reshuffle_each_iteration=True)
        ds = self.builder.as_dataset(
            split=self.split,
            decoders={"image": tfds.decode.SkipDecoding()},
            shuffle_files=bool(shuffle),
            read_config=read_config,
        )
        return ds.map(
            lambda example: (decode_image(example["image"]), tf.cast(example["label"], tf.int32)),
            num_parallel_calls=AUTOTUNE,
        )


def decode_image(data):
    """Encoded JPEG / PNG / GIF (first frame) / BMP / WebP bytes -> uint8 [h, w, 3] RGB."""
    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return image


@dataclasses.dataclass
class DatasetBundle:
    """A dataset ready for training: its facts and `batches()`, its tf.data pipelines.

    Attributes:
        name: the dataset name ("clothing-mini" for the embedded default, a Decathlon name, "folder").
        class_names: the class names, in label order.
        num_classes: len(class_names).
        split_sizes: {split: number of images}, splits among "train", "validation", "test".
        labelled_splits: the splits with known labels (the Decathlon test split has none: its labels are -1,
            so evaluate on "validation").
        mean, std: RGB channel statistics of images in [0, 1] (the published ones for the Decathlon, computed on
            the training split for other data), for the model's normalisation layer.
        skipped: the image files that cannot be read, as `SkippedFile(path, reason)`; they are left out.
        policy: the preprocessing policy (see `pipelines.preprocessing`).
        source: where the data came from (for logs and run directories).
        layout: how the splits were found or drawn.
        cache_limit_bytes: splits whose decoded, resized images take less than this are cached in memory.
    """

    name: str
    class_names: list
    num_classes: int
    split_sizes: dict
    labelled_splits: tuple
    mean: tuple
    std: tuple
    skipped: list
    policy: str
    source: str
    layout: str = ""
    cache_limit_bytes: int = DEFAULT_CACHE_LIMIT_BYTES
    splits: dict = dataclasses.field(default_factory=dict, repr=False)

    def _split(self, split):
        key = canonical_split(split)
        if key not in self.splits:
            raise DataError(f"dataset {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        return key, self.splits[key]

    def files(self, split):
        """[(image file, label), ...] of a split stored as files, in the evaluation order."""
        key, source = self._split(split)
        if not isinstance(source, FileSplit):
            raise DataError(f"split {key!r} of {self.name!r} is stored by TFDS, not as image files")
        return list(zip(source.sources, source.labels))

    def num_batches(self, split, batch_size, drop_remainder=False):
        """The number of batches `batches(split, batch_size, drop_remainder=...)` yields."""
        _, source = self._split(split)
        if drop_remainder:
            return len(source) // int(batch_size)
        return math.ceil(len(source) / int(batch_size))

    def batches(self, split, batch_size, training, image_size=72, seed=0, shuffle=None, drop_remainder=False,
                cache=None, epochs=None):
        """A tf.data pipeline of (float32 [B, H, W, 3] RGB in [0, 255], int32 [B]) batches.

        Args:
            split: "train", "validation" (or "val") or "test".
            batch_size: images per batch.
            training: apply the training transform (random crops, scales, flips per `policy`) or the
                evaluation one (resize, centre crop).
            image_size: the evaluation side S (training crops are S, or round(S * 64 / 72) for the Decathlon
                random-crop tasks).
            seed: seeds the shuffle and the augmentation; the same seed gives the same batches, epoch by epoch.
            shuffle: shuffle the order (default: `training`). Evaluation order is the split's order.
            drop_remainder: drop the last, smaller batch.
            cache: cache the decoded, resized images in memory (default: when they take less than
                `cache_limit_bytes`).
            epochs: (first, stop): the batches of epochs first .. stop - 1, one epoch after the other
                (`num_batches` each; pass it to fit as steps_per_epoch). The order and the augmentation
                of epoch e depend only on (seed, e) (`epoch_seed`), so a run resumed at epoch e sees
                the batches the uninterrupted run saw there. Without `epochs`, each pass over the
                pipeline is reshuffled from where the last one left off.

        Unreadable files were left out at load time; a file that breaks later (changed since) is dropped and
        replaced by an image of the next pass, so the pipeline's cardinality is always `num_batches(...)`.
        """
        key, source = self._split(split)
        prep = Preprocessing(self.policy, image_size)
        shuffle = bool(training) if shuffle is None else bool(shuffle)
        if cache is None:
            cache = source.cached_bytes(prep, training) < self.cache_limit_bytes
        seed = int(seed)
        count = len(source)

        def decoded(order_seed, reshuffle):
            """The deterministic part (decoded, resized), shuffled before decoding where it is not cached."""
            files_shuffled = shuffle and not cache and (reshuffle or isinstance(source, FileSplit))
            ds = source.dataset(shuffle=files_shuffled, seed=order_seed, reshuffle=reshuffle)
            ds = ds.map(lambda image, label: (prep.deterministic(image, training), label), num_parallel_calls=AUTOTUNE)
            if isinstance(source, FileSplit):
                # The last guard (the load-time scan left out the files Pillow cannot read): a file that fails to
                # decode now is dropped with a logged warning, and the pass is topped up from the next one, so an
                # epoch always has len(source) images and the cardinality stays known (Keras counts its steps).
                ds = ds.ignore_errors(log_warning=True).repeat().take(count)
                ds = ds.apply(tf.data.experimental.assert_cardinality(count))
            return ds

        def shuffled(ds, order_seed, reshuffle):
            if cache and shuffle:
                return ds.shuffle(count, seed=order_seed, reshuffle_each_iteration=reshuffle)
            if shuffle and isinstance(source, TFDSSplit):
                return ds.shuffle(min(count, SHUFFLE_BUFFER), seed=order_seed, reshuffle_each_iteration=reshuffle)
            return ds

        def finished(ds, element_seeds):
            if prep.is_random(training):
                ds = tf.data.Dataset.zip((ds, element_seeds)).map(
                    lambda pair, element_seed: (prep.augment(pair[0], element_seed), pair[1]),
                    num_parallel_calls=AUTOTUNE,
                )
            else:
                ds = ds.map(lambda image, label: (prep.finish(image, training), label), num_parallel_calls=AUTOTUNE)
            return ds.batch(int(batch_size), drop_remainder=drop_remainder)

        if epochs is None:
            ds = decoded(seed, reshuffle=True)
            if cache:
                ds = ds.cache()
            ds = shuffled(ds, seed, reshuffle=True)
            ds = finished(ds, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2))
        else:
            first, stop = (int(e) for e in epochs)
            if cache:
                base = decoded(seed, reshuffle=False).cache()  # filled by the first epoch, read by the others

            def one_epoch(epoch):
                order_seed = epoch_seed(seed, epoch)
                ds = base if cache else decoded(order_seed, reshuffle=False)
                ds = shuffled(ds, order_seed, reshuffle=False)
                # Each image's augmentation seed: (the epoch's seed, its position in the epoch), stateless.
                positions = tf.data.Dataset.range(count).map(lambda i: tf.stack([tf.constant(order_seed, tf.int64), i]))
                return finished(ds, positions)

            # One pipeline per epoch with Python seeds (tf.data's shuffle takes no tensor seed here), chained.
            ds = concatenate([one_epoch(epoch) for epoch in range(first, max(first + 1, stop))])
        options = tf.data.Options()
        options.deterministic = True
        ds = ds.with_options(options)
        return ds.prefetch(AUTOTUNE)


def epoch_seed(seed, epoch):
    """The seed of epoch `epoch` of a run seeded `seed`: one value per (seed, epoch) pair of the runs one makes."""
    return (int(seed) * 1_000_003 + int(epoch)) % (2**62)


def concatenate(datasets):
    """`datasets` one after the other (a balanced tree of `concatenate`, so a long run is not a deep one)."""
    while len(datasets) > 1:
        datasets = [a.concatenate(b) for a, b in zip(datasets[::2], datasets[1::2])] + ([datasets[-1]] if len(datasets) % 2 else [])
    return datasets[0]
