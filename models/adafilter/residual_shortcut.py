"""The weight-free shortcut of `BasicBlock`, as a layer of its own (for networks that replay a block op by op)."""

import keras
from keras import ops

from models.backbones.basic_block import SHORTCUTS
from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualShortcut(keras.layers.Layer):
    """`BasicBlock`'s shortcut: identity, or subsample ("option_a": every `strides`-th pixel; "avg_pool":
    `strides` x `strides` average pooling) and zero-pad the channels up to `filters` ("option_a": half
    before, half after; "avg_pool": after).

    Args:
        filters: output channels.
        strides: spatial stride.
        shortcut: "option_a" or "avg_pool".
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: `[batch, h, w, in_channels]`, in_channels <= filters.

    Reference:
    - [He et al., Deep Residual Learning for Image Recognition](https://arxiv.org/abs/1512.03385)
    """

    def __init__(self, filters, strides=1, shortcut="option_a", **kwargs):
        super().__init__(**kwargs)
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.filters = int(filters)
        self.strides = int(strides)
        self.shortcut = shortcut

    def call(self, x):
        in_channels = x.shape[-1]
        if self.strides == 1 and in_channels == self.filters:
            return x
        if self.shortcut == "option_a":
            if self.strides > 1:
                x = x[:, :: self.strides, :: self.strides, :]
            extra = self.filters - in_channels
            return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])
        if self.strides > 1:
            x = ops.average_pool(x, self.strides, self.strides, padding="same")
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.filters - in_channels]])

    def compute_output_shape(self, input_shape):
        def size(n):
            return None if n is None else -(-n // self.strides)

        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "strides": self.strides, "shortcut": self.shortcut})
        return config
