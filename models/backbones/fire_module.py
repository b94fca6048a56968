"""The SqueezeNet fire module."""

import keras

from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class FireModule(keras.layers.Layer):
    """Squeeze 1x1 + ReLU, then expand 1x1 + ReLU and expand 3x3 ('same') + ReLU, concatenated.

    With `downsample=True` the module starts with the 3x3 stride-2 max-pooling ('valid') that
    SqueezeNet 1.1 places between stages, so that every routable block of `squeezenet1_1` is one
    layer and the first block of each stage is the one that changes the resolution, as in the
    ResNets.

    Padding follows the Keras-2 SqueezeNet 1.1 (rcmalli/keras-squeezenet) whose weights this
    project imports: 1x1 convolutions and pooling 'valid', the 3x3 expand 'same'. The concatenation
    order is [expand1x1, expand3x3].

    Args:
        squeeze_filters: channels of the squeeze 1x1 convolution.
        expand_filters: channels of each expand convolution (output has twice as many).
        downsample: whether to max-pool (3x3, stride 2, 'valid') first.
        kernel_initializer: initializer of the convolution kernels.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `[batch, height, width, channels]`.

    Example:
    >>> fire = FireModule(16, 64)
    >>> fire(keras.ops.zeros((2, 15, 15, 64))).shape
    (2, 15, 15, 128)

    Reference:
    - [Iandola et al., SqueezeNet](https://arxiv.org/abs/1602.07360)
    """

    def __init__(
        self,
        squeeze_filters,
        expand_filters,
        downsample=False,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.squeeze_filters = int(squeeze_filters)
        self.expand_filters = int(expand_filters)
        self.downsample = bool(downsample)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

        # === Layers ===
        def conv(filters, size, padding, name):
            return keras.layers.Conv2D(
                filters,
                size,
                padding=padding,
                activation="relu",
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name=name,
            )

        self.pool = None
        if self.downsample:
            self.pool = keras.layers.MaxPooling2D(3, 2, padding="valid", dtype=self.dtype_policy, name="pool")
        self.squeeze = conv(self.squeeze_filters, 1, "valid", "squeeze1x1")
        self.expand1x1 = conv(self.expand_filters, 1, "valid", "expand1x1")
        self.expand3x3 = conv(self.expand_filters, 3, "same", "expand3x3")

    def build(self, input_shape):
        self.squeeze.build(input_shape)
        squeezed = (None, None, None, self.squeeze_filters)
        self.expand1x1.build(squeezed)
        self.expand3x3.build(squeezed)

    def call(self, inputs):
        x = inputs
        if self.pool is not None:
            x = self.pool(x)
        x = self.squeeze(x)
        return keras.ops.concatenate([self.expand1x1(x), self.expand3x3(x)], axis=-1)

    def compute_output_shape(self, input_shape):
        def size(n):
            if n is None or not self.downsample:
                return n
            return (n - 3) // 2 + 1

        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), 2 * self.expand_filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "squeeze_filters": self.squeeze_filters,
                "expand_filters": self.expand_filters,
                "downsample": self.downsample,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
