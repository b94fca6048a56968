"""A policy whose decisions are fixed in advance: a global-k result, "last-k", or any 0/1 mask.

Method page: docs/methods/global_k.md.
"""

import keras
from keras import ops

from models.serialization import PACKAGE

# Logit magnitude of a fixed decision. The Gumbel noise is bounded (|g| < 17 for float32 draws), so
# the hard gate's choice is the decision whatever the noise; soft samples are one-hot up to
# exp(-(2M - 34) / tau), exactly for tau < 100.
FIXED_LOGIT = 1e4


@keras.saving.register_keras_serializable(package=PACKAGE)
class FixedPolicy(keras.layers.Layer):
    """Constant logits that make the Gumbel gate pick the given copy of every block, always.

    Decision 1 gives the logits `(-M, +M)`, decision 0 `(+M, -M)`, M = 1e4: in training (with noise),
    at deterministic or sampled inference, a hard gate returns exactly the one-hot of the decision,
    and no gradient reaches anything (the layer has no weights). A routed model with a fixed policy keeps the uniform
    policy -> gate -> blocks graph, and `models.spottune.compact` turns it into a plain classifier.

    Args:
        decisions: one 0/1 per block (1 = fine-tuned copy, 0 = pretrained copy).
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: any tensor whose first axis is the batch.

    Returns:
        logits `[batch, num_blocks, 2]`.

    Example:
    >>> policy = FixedPolicy([0, 0, 1, 1])  # "last-2"
    >>> policy(keras.ops.zeros((2, 8, 8, 3))).shape
    (2, 4, 2)

    Reference:
    - [Guo et al., SpotTune: Transfer Learning through Adaptive Fine-tuning](https://arxiv.org/abs/1811.08737),
      section 3.3 (global-k keeps one copy per block).
    """

    def __init__(self, decisions, **kwargs):
        super().__init__(**kwargs)
        decisions = [int(d) for d in decisions]
        if not decisions or any(d not in (0, 1) for d in decisions):
            raise ValueError(f"decisions must be a non-empty list of 0/1, got {decisions!r}")
        self.decisions = decisions

    @property
    def num_blocks(self):
        return len(self.decisions)

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        logits = [[-FIXED_LOGIT, FIXED_LOGIT] if d else [FIXED_LOGIT, -FIXED_LOGIT] for d in self.decisions]
        logits = ops.convert_to_tensor(logits, dtype=self.compute_dtype)
        return ops.broadcast_to(ops.expand_dims(logits, 0), (batch, self.num_blocks, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_blocks, 2)

    def get_config(self):
        config = super().get_config()
        config.update({"decisions": list(self.decisions)})
        return config
