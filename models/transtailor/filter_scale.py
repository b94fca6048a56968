"""TransTailor's scale per filter, `y = alpha * x` on the channel axis."""

import keras

from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class FilterScale(keras.layers.Layer):
    """`y[..., c] = alpha[c] * x[..., c]`, one learned scale per filter (TransTailor's alpha).

    Placed after the last BatchNorm of a prunable channel group, before its activation (our reading: the
    paper initialises alpha randomly and does not say where it sits; after BatchNorm, BN cannot undo it,
    and a zero alpha then zeroes the channel for every consumer, so removing that channel changes nothing).
    Initialised to 1 (our reading), so inserting the layer leaves the network as it was.

    Args:
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: `[batch, ..., channels]`.

    Reference:
    - [Liu et al., TransTailor: Pruning the Pre-trained Model for Improved Transfer Learning](https://arxiv.org/abs/2103.01542)
    """

    def build(self, input_shape):
        self.alpha = self.add_weight(name="alpha", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * keras.ops.cast(self.alpha, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape
