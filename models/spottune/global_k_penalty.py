"""The global-k loss terms of SpotTune (paper section 3.3; docs/methods/global_k.md).

    loss = CE + count_weight * (sum_l v_l - k)^2 + binarize_weight * sum_l (-v_l * log v_l)

v_l is the fraction of the batch routed to the fine-tuned copy of block l. The first term asks
for k fine-tuned blocks, the second pushes every v_l towards 0 or 1. The authors' code does not
contain these terms and no weights were published (our reading: the defaults below are ours).

Which v_l (our choice): the *expected* fraction, `v_l = mean_b softmax(logits[b, l])[1]`. Under
the hard Gumbel gate, `P(image b uses the fine-tuned copy of l) = softmax(logits[b, l])[1]`
exactly, whatever the temperature, so this is the expectation of the sampled fraction; unlike
the batch mean of the straight-through samples it is smooth, noise-free and never exactly 0 or 1
(the entropy term stays finite) and its gradient reaches the policy logits directly. For the
global policy, v_l is simply the block's probability of using its fine-tuned copy.
"""

import keras
from keras import ops

from models.serialization import PACKAGE


def routing_fractions(probabilities):
    """Mean over the batch (axis 0) of per-image routing probabilities or decisions `[batch, L]` -> `[L]`."""
    return ops.mean(ops.cast(probabilities, "float32"), axis=0)


def expected_fractions(logits):
    """v_l of the global-k terms from policy logits `[batch, L, 2]`: `mean_b softmax(logits)[..., 1]`."""
    probabilities = ops.softmax(ops.cast(logits, "float32"), axis=-1)[..., 1]
    return routing_fractions(probabilities)


def count_loss(fractions, k):
    """`(sum_l v_l - k)^2`: asks for k blocks routed to their fine-tuned copies.

    Args:
        fractions: v, `[L]`, the fraction of the batch using the fine-tuned copy of each block.
        k: the target number of fine-tuned blocks.

    Returns:
        a scalar.

    Reference:
    - [Guo et al., SpotTune: Transfer Learning through Adaptive Fine-tuning](https://arxiv.org/abs/1811.08737),
      section 3.3.
    """
    fractions = ops.cast(fractions, "float32")
    return ops.square(ops.sum(fractions) - float(k))


def binarize_loss(fractions, epsilon=1e-12):
    """`sum_l (-v_l * log v_l)`: zero when every v_l is 0 or 1, largest at v_l = 1/e.

    `log` is taken of `max(v, epsilon)` so that v = 0 contributes 0, not NaN.

    Args:
        fractions: v, `[L]`, the fraction of the batch using the fine-tuned copy of each block.
        epsilon: floor inside the logarithm.

    Returns:
        a scalar.

    Reference:
    - [Guo et al., SpotTune: Transfer Learning through Adaptive Fine-tuning](https://arxiv.org/abs/1811.08737),
      section 3.3.
    """
    fractions = ops.cast(fractions, "float32")
    return ops.sum(-fractions * ops.log(ops.maximum(fractions, epsilon)))


def global_k_loss(fractions, k, count_weight, binarize_weight):
    """`count_weight * count_loss(v, k) + binarize_weight * binarize_loss(v)`."""
    return count_weight * count_loss(fractions, k) + binarize_weight * binarize_loss(fractions)


@keras.saving.register_keras_serializable(package=PACKAGE)
class GlobalKPenalty(keras.layers.Layer):
    """Passes policy logits through unchanged and, in training, adds the global-k loss terms.

    In training, `add_loss(count_weight * count_loss(v, k) + binarize_weight * binarize_loss(v))`
    with `v = expected_fractions(logits)` (see the module docstring for why), so `model.fit`
    minimises `CE + penalty` with no custom training step. Nothing is added at inference, so
    validation losses stay comparable with the other strategies.

    Args:
        target_k: k, the number of blocks that should use their fine-tuned copy.
        count_weight: weight of `(sum_l v_l - k)^2` (lambda_1; our default, no published value).
        binarize_weight: weight of `sum_l -v_l log v_l` (lambda_2; our default, no published value).
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: policy logits `[batch, L, 2]`.
        training: bool; the penalty is added only when True.

    Example:
    >>> penalty = GlobalKPenalty(target_k=3, count_weight=1.0, binarize_weight=0.1)

    Reference:
    - [Guo et al., SpotTune: Transfer Learning through Adaptive Fine-tuning](https://arxiv.org/abs/1811.08737),
      section 3.3.
    """

    def __init__(self, target_k, count_weight=1.0, binarize_weight=0.1, **kwargs):
        super().__init__(**kwargs)
        if int(target_k) < 0:
            raise ValueError(f"target_k must be >= 0, got {target_k!r}")
        self.target_k = int(target_k)
        self.count_weight = float(count_weight)
        self.binarize_weight = float(binarize_weight)

    def call(self, inputs, training=None):
        if training:
            fractions = expected_fractions(inputs)
            self.add_loss(global_k_loss(fractions, self.target_k, self.count_weight, self.binarize_weight))
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "target_k": self.target_k,
                "count_weight": self.count_weight,
                "binarize_weight": self.binarize_weight,
            }
        )
        return config
