"""Per-dataset preprocessing and augmentation, as TensorFlow graph functions for tf.data.

Every policy is split in two parts so that the expensive, deterministic part can be cached in memory:

- `Preprocessing.deterministic(image, training)`: uint8 [h, w, 3] -> uint8 (resizing, centre crops);
- `Preprocessing.augment(image, seed)`: uint8 -> float32 [0, 255] (random crops, scales and flips), driven
  by a per-example stateless seed, so a pipeline is reproducible for a given `seed`.

Policies (`S` is `image_size`, 72 by default; the Decathlon numbers are the authors' for S = 72, scaled):

- `"decathlon-random-crop"` (aircraft, cifar100, dtd, ucf101, vgg-flowers): shorter side resized to S;
  training takes a random crop of round(S * 64 / 72) (64 for S = 72, so training batches are smaller than
  evaluation batches, as in the authors' code); evaluation takes the centre S x S crop. No flips.
- `"decathlon-centre-crop"` (gtsrb, omniglot, svhn, and imagenet12, for which the authors' table gives no
  rule; our reading): shorter side resized to S, centre S x S crop, in training and evaluation alike.
- `"decathlon-resize"` (daimlerpedcls): resized to S x S (aspect ratio not kept), training and evaluation.
- `"folder"` (any other data, our choice): training resizes the shorter side to S * u with u ~ U(1, 1.15),
  takes a random S x S crop and flips left-right with probability 1/2; evaluation resizes the shorter side
  to S and takes the centre S x S crop. (Implemented as: cache the image with shorter side
  round(S * 1.15), crop a random square of side round(shorter / u) and resize it to S x S, which is the
  same transform with one resize of the crop only.)

Resizing is bilinear with antialiasing, rounded back to uint8.
"""

import math

import tensorflow as tf

POLICIES = ("decathlon-random-crop", "decathlon-centre-crop", "decathlon-resize", "folder")

# The largest random up-scaling of the "folder" policy (shorter side resized to S * U(1, MAX_SCALE)).
MAX_SCALE = 1.15


def resize_shorter_side(image, size):
    """Resizes a uint8 [h, w, c] image so that its shorter side is `size` (a Python int); keeps the aspect."""
    shape = tf.shape(image)
    height = tf.cast(shape[0], tf.float32)
    width = tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_height = tf.maximum(size, tf.cast(tf.round(height * scale), tf.int32))
    new_width = tf.maximum(size, tf.cast(tf.round(width * scale), tf.int32))
    return _resize_uint8(image, new_height, new_width)


def centre_crop(image, size):
    """The central `size` x `size` window of an image whose sides are at least `size`."""
    shape = tf.shape(image)
    top = (shape[0] - size) // 2
    left = (shape[1] - size) // 2
    return tf.image.crop_to_bounding_box(image, top, left, size, size)


def _resize_uint8(image, height, width):
    resized = tf.image.resize(image, tf.stack([height, width]), method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


class Preprocessing:
    """One preprocessing policy at one image size (see the module docstring for the policies).

    Args:
        policy: one of `POLICIES`.
        image_size: the evaluation side S in pixels.

    Example:
        prep = Preprocessing("folder", 72)
        cached = prep.deterministic(uint8_image, training=True)
        batch_image = prep.augment(cached, seed=tf.constant([1, 2], tf.int64))
    """

    def __init__(self, policy, image_size=72):
        if policy not in POLICIES:
            raise ValueError(f"unknown preprocessing policy {policy!r}; expected one of {POLICIES}")
        image_size = int(image_size)
        if image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {image_size}")
        self.policy = policy
        self.image_size = image_size
        self.train_crop = int(round(image_size * 64 / 72))
        self.cache_side = int(round(image_size * MAX_SCALE))

    def is_random(self, training):
        """Whether training batches under this policy get random augmentation."""
        return bool(training) and self.policy in ("decathlon-random-crop", "folder")

    def output_size(self, training):
        """The (height, width) of the images in the batches."""
        if self.policy == "decathlon-random-crop" and training:
            return (self.train_crop, self.train_crop)
        return (self.image_size, self.image_size)

    def cached_shape(self, height, width, training):
        """(h, w) of the image after `deterministic`, for an input of `height` x `width`."""
        size = self.image_size
        if self.policy == "decathlon-resize" or not (training and self.is_random(training)):
            return (size, size)
        side = self.cache_side if self.policy == "folder" else size
        scale = side / max(1, min(height, width))
        return (max(side, int(round(height * scale))), max(side, int(round(width * scale))))

    def deterministic(self, image, training):
        """The cacheable part: uint8 [h, w, 3] -> uint8 [h', w', 3]."""
        size = self.image_size
        if self.policy == "decathlon-resize":
            image = _resize_uint8(image, tf.constant(size), tf.constant(size))
        elif training and self.policy == "folder":
            image = resize_shorter_side(image, self.cache_side)
        elif training and self.policy == "decathlon-random-crop":
            image = resize_shorter_side(image, size)
        else:
            image = centre_crop(resize_shorter_side(image, size), size)
        height, width = self.output_size(training) if not self.is_random(training) else (None, None)
        image.set_shape([height, width, 3])
        return image

    def augment(self, image, seed):
        """The random part for training: uint8 -> float32 [0, 255]; `seed` is an int [2] stateless seed."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
        if self.policy == "decathlon-random-crop":
            crop = self.train_crop
            image = tf.image.stateless_random_crop(image, [crop, crop, 3], seed=seeds[0])
        elif self.policy == "folder":
            size = self.image_size
            shape = tf.shape(image)
            shorter = tf.cast(tf.minimum(shape[0], shape[1]), tf.float32)
            scale = tf.random.stateless_uniform([], seed=seeds[0], minval=1.0, maxval=MAX_SCALE)
            side = tf.cast(tf.round(shorter / scale), tf.int32)
            side = tf.clip_by_value(side, size, tf.cast(shorter, tf.int32))
            image = tf.image.stateless_random_crop(image, tf.stack([side, side, 3]), seed=seeds[1])
            image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
            image = tf.image.stateless_random_flip_left_right(image, seed=seeds[2])
        height, width = self.output_size(training=True)
        image = tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0)
        image.set_shape([height, width, 3])
        return image

    def finish(self, image, training):
        """The non-random end of the pipeline: uint8 -> float32 [0, 255] with a static shape."""
        image = tf.cast(image, tf.float32)
        height, width = self.output_size(training)
        image.set_shape([height, width, 3])
        return image

    def cached_bytes(self, sizes, training):
        """Bytes that caching the `deterministic` outputs of images of (height, width) `sizes` takes."""
        total = 0
        for height, width in sizes:
            h, w = self.cached_shape(height, width, training)
            total += h * w * 3
        return total


def estimate_cached_bytes(prep, count, training, aspect=1.5):
    """Upper estimate of the cache size for `count` images of unknown size (longer side <= aspect * shorter)."""
    side = prep.image_size
    return prep.cached_bytes([(side, int(math.ceil(side * aspect)))], training) * count
