"""SpotTune's global policy (docs/methods/global_k.md): one learned logit pair per block, for all images."""

import keras
from keras import ops

from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class GlobalPolicy(keras.layers.Layer):
    """One trainable logit pair per block, shared by every input and broadcast over the batch.

    The input only sets the batch size. Each image still draws its own Gumbel noise in training
    (the gate samples `[batch, L, 2]` independently), so the fraction of a batch routed to the
    fine-tuned copy of block l estimates `softmax(logits[l])[1]`; at deterministic inference every
    image takes the same path, which is what makes the compact (global-k) model possible.

    Args:
        num_blocks: L, the number of routable blocks.
        logits_initializer: initializer of the `[L, 2]` logits; "zeros" (our choice, no public
            code) starts every block at probability 0.5 (ties resolve to the pretrained copy).
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: any tensor whose first axis is the batch (the normalised image).

    Returns:
        logits `[batch, num_blocks, 2]` (index 1 = "use the fine-tuned block").

    Example:
    >>> policy = GlobalPolicy(num_blocks=9)
    >>> policy(keras.ops.zeros((4, 32, 32, 3))).shape
    (4, 9, 2)

    Reference:
    - [Guo et al., SpotTune: Transfer Learning through Adaptive Fine-tuning](https://arxiv.org/abs/1811.08737),
      section 3.3.
    """

    def __init__(self, num_blocks, logits_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        if int(num_blocks) < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks!r}")
        self.num_blocks = int(num_blocks)
        self.logits_initializer = keras.initializers.get(logits_initializer)

    def build(self, input_shape):
        self.logits = self.add_weight(
            shape=(self.num_blocks, 2), initializer=self.logits_initializer, trainable=True, name="logits"
        )

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        logits = ops.cast(self.logits, self.compute_dtype)
        return ops.broadcast_to(ops.expand_dims(logits, 0), (batch, self.num_blocks, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_blocks, 2)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_blocks": self.num_blocks,
                "logits_initializer": keras.initializers.serialize(self.logits_initializer),
            }
        )
        return config
