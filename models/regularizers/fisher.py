"""The diagonal empirical Fisher information at w0, from per-example gradients.

Method page: docs/methods/l2_sp.md.
"""

import time
import typing

import keras
import numpy as np


class FisherEstimate(typing.NamedTuple):
    """What `estimate_fisher` measured.

    Attributes:
        fisher: list of float32 arrays F, shaped like the variables, all >= 0.
        examples: number of examples averaged.
        seconds: wall time of the estimate.
    """

    fisher: list
    examples: int
    seconds: float


def estimate_fisher(model, variables, batches, max_batches=None):
    """Diagonal empirical Fisher `F_j = mean_i (d log p(y_i | x_i; w) / d w_j)^2` at the current weights.

    - y_i is the model's own predicted label (`argmax` of its logits for x_i), held fixed.
    - The gradients are **per example** (a loop over the examples of each batch, batch size 1 inside):
      the square is taken before the mean, as the definition asks. Cost: one forward and one
      backward pass per example at batch size 1, about as much compute as one training epoch over
      the same number of images but slower per image (batch-1 convolutions): measured about 6 ms
      per image for ResNet-20 at 32 px on 2 CPU cores (1,280 images, the default 20 batches of 64:
      about 8 s).
    - The model runs in inference mode (`training=False`): BatchNorm uses its moving statistics,
      so every example is independent of the others in its batch.

    Which data and which labels: the SP authors estimated F on the *source* data (ImageNet) with
    the source task's loss. A fine-tuning run usually has only the target data, so callers pass
    target training images and the model's own predictions: F then measures how sensitive the
    model's current predictions on target images are to each weight, not how much the weight
    mattered for the source task. With a source classifier at hand (the CIFAR ResNets carry
    theirs), pass `model` = backbone features -> source classifier to get the source task's
    log-likelihood on target images, the closest available approximation.

    Uses `tf.GradientTape` (keras.ops has no gradient API): TensorFlow backend only.

    Args:
        model: a callable `images -> logits` (a Keras model) whose weights include `variables`.
        variables: the variables to estimate F for.
        batches: an iterable of `(images, labels)` or of images; labels, if any, are ignored.
        max_batches: use at most this many batches (None: all).

    Returns:
        a `FisherEstimate`.

    Reference:
    - [Li, Grandvalet, Davoine, Explicit Inductive Bias for Transfer Learning with Convolutional
      Networks (ICML 2018)](https://arxiv.org/abs/1802.01483), section 3 (L2-SP-Fisher).
    - [Kirkpatrick et al., Overcoming catastrophic forgetting in neural networks (PNAS 2017)]
      (https://arxiv.org/abs/1612.00796), the diagonal Fisher of EWC.
    """
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise NotImplementedError("estimate_fisher needs the TensorFlow backend")
    variables = list(variables)
    started = time.perf_counter()
    sums = [np.zeros(tuple(v.shape), np.float64) for v in variables]
    if not variables:
        return FisherEstimate([], 0, 0.0)

    # The backend variables (a Keras variable wraps a tf.Variable); watched explicitly, so frozen
    # (non-trainable) weights get their Fisher too.
    watched = [getattr(v, "value", v) for v in variables]

    @tf.function(reduce_retracing=True)
    def squared_gradients(images):
        accumulated = [tf.zeros(tuple(v.shape), tf.float32) for v in variables]
        for index in tf.range(tf.shape(images)[0]):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(watched)
                logits = tf.cast(model(images[index : index + 1], training=False), tf.float32)
                predicted = tf.stop_gradient(tf.argmax(logits, axis=-1))
                log_likelihood = -tf.reduce_sum(
                    tf.nn.sparse_softmax_cross_entropy_with_logits(labels=predicted, logits=logits)
                )
            gradients = tape.gradient(log_likelihood, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            accumulated = [a + tf.square(tf.cast(g, tf.float32)) for a, g in zip(accumulated, gradients)]
        return accumulated

    examples = 0
    for number, batch in enumerate(batches):
        if max_batches is not None and number >= max_batches:
            break
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        images = tf.convert_to_tensor(images, tf.float32)
        for total, part in zip(sums, squared_gradients(images)):
            total += part.numpy()
        examples += int(images.shape[0])
    if examples == 0:
        raise ValueError("estimate_fisher got no examples")
    fisher = [(total / examples).astype(np.float32) for total in sums]
    return FisherEstimate(fisher, examples, time.perf_counter() - started)


def normalize_fisher(fisher):
    """F / mean(F) over every entry of every array (mean 1), so that the SP trade-off alpha keeps the
    meaning it has for plain L2-SP and F only redistributes the pull between weights (our choice;
    `raw` leaves F as estimated, typically 1e-6..1e-2, which makes alpha * F vanishingly small)."""
    total = sum(float(np.sum(f, dtype=np.float64)) for f in fisher)
    count = sum(int(f.size) for f in fisher)
    mean = total / count if count else 0.0
    if mean <= 0:
        return [np.ones_like(f) for f in fisher]
    return [(f / mean).astype(np.float32) for f in fisher]
