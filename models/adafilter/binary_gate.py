"""The hard 0/1 gate of AdaFilter, with the straight-through estimator."""

import keras
from keras import ops

from models.serialization import PACKAGE

FORCE_VALUES = (None, 0, 1)


@keras.saving.register_keras_serializable(package=PACKAGE)
class BinaryGate(keras.layers.Layer):
    """`g = hard + stop_gradient(hard - p)` rewritten `p + stop_gradient(hard - p)`, `p = sigmoid(logits)`,
    `hard = [logits >= 0]` (the same as `p >= 0.5`).

    Forward: exactly 0 or 1 (for hard = 1, p >= 0.5 and `1 - p` is exact in floating point, so the sum
    is exactly 1). Backward: the gradient of the sigmoid (straight-through estimator, Bengio et al. 2013;
    the form SkipNet's `RNNGate` uses). Evaluation and export use `hard` only: the same deterministic
    gate (AdaFilter, Guo et al. AAAI 2020: "Inference: the same deterministic gates").

    Args:
        force: None (learned gates), 0 (every filter takes the pretrained path) or 1 (every filter takes
            the fine-tuned path). For checks and ablations; 0 and 1 make the network equal the pretrained
            one and the fine-tuned copy.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        logits: float tensor `[batch, filters]`.
        training: bool; the straight-through path is built only when training.

    Example:
    >>> BinaryGate()(keras.ops.convert_to_tensor([[-1.0, 0.5]])).numpy().tolist()
    [[0.0, 1.0]]

    Reference:
    - [Guo et al., AdaFilter: Adaptive Filter Fine-tuning for Deep Transfer Learning](https://arxiv.org/abs/1911.09659)
    - [Wang et al., SkipNet](https://arxiv.org/abs/1711.09485), `RNNGate`.
    """

    def __init__(self, force=None, **kwargs):
        super().__init__(**kwargs)
        if force not in FORCE_VALUES:
            raise ValueError(f"force must be one of {FORCE_VALUES}, got {force!r}")
        self.force = force

    def call(self, logits, training=None):
        if self.force is not None:
            return ops.zeros_like(logits) + float(self.force)
        hard = ops.cast(ops.greater_equal(logits, 0.0), logits.dtype)
        if not training:
            return hard
        probability = ops.sigmoid(logits)
        return probability + ops.stop_gradient(hard - probability)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"force": self.force})
        return config
