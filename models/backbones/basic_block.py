"""The two-convolution residual block of the small ResNets (CIFAR ResNets, Decathlon ResNet-26)."""

import keras

from models.serialization import PACKAGE

SHORTCUTS = ("option_a", "avg_pool")


@keras.saving.register_keras_serializable(package=PACKAGE)
class BasicBlock(keras.layers.Layer):
    """`y = relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))`, with a shortcut without weights.

    Where the block changes the shape (stride > 1 or more output channels), the shortcut is
    - "option_a" (He et al. 2016, CIFAR): take every `strides`-th pixel (`x[:, ::2, ::2, :]`),
      then zero-pad the new channels, half before and half after the input channels;
    - "avg_pool" (Visual Decathlon ResNet-26, SpotTune): `strides` x `strides` average pooling,
      then zero channels appended after the input channels.
    Elsewhere it is the identity.

    A strided first convolution pads one pixel on each side explicitly, as PyTorch does
    (TensorFlow's "same" would pad only after), so PyTorch weights import exactly.

    Args:
        filters: output channels of both convolutions.
        strides: stride of the first convolution (and of the shortcut).
        shortcut: "option_a" or "avg_pool", used where the shape changes.
        bn_epsilon: BatchNormalization epsilon (PyTorch uses 1e-5).
        bn_momentum: BatchNormalization momentum (PyTorch's momentum 0.1 is Keras' 0.9).
        kernel_initializer: initializer of both convolution kernels.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `[batch, height, width, in_channels]`, `in_channels <= filters`.
        training: bool, BatchNorm mode.

    Example:
    >>> block = BasicBlock(32, strides=2)
    >>> block(keras.ops.zeros((2, 16, 16, 16))).shape
    (2, 8, 8, 32)

    Reference:
    - [He et al., Deep Residual Learning for Image Recognition](https://arxiv.org/abs/1512.03385)
    - [Rebuffi et al., Learning multiple visual domains with residual adapters](https://arxiv.org/abs/1705.08045)
    """

    def __init__(
        self,
        filters,
        strides=1,
        shortcut="option_a",
        bn_epsilon=1e-5,
        bn_momentum=0.9,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
        self.filters = int(filters)
        self.strides = int(strides)
        self.shortcut = shortcut
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

        # === Layers ===
        def conv(name, strides):
            return keras.layers.Conv2D(
                self.filters,
                3,
                strides=strides,
                padding="valid" if strides > 1 else "same",
                use_bias=False,
                kernel_initializer=self.kernel_initializer,
                dtype=self.dtype_policy,
                name=name,
            )

        def bn(name):
            return keras.layers.BatchNormalization(
                epsilon=self.bn_epsilon, momentum=self.bn_momentum, dtype=self.dtype_policy, name=name
            )

        self.conv1 = conv("conv1", self.strides)
        self.bn1 = bn("bn1")
        self.conv2 = conv("conv2", 1)
        self.bn2 = bn("bn2")

    def build(self, input_shape):
        in_channels = input_shape[-1]
        if in_channels is None or in_channels > self.filters:
            raise ValueError(
                f"BasicBlock needs a known number of input channels <= filters={self.filters}, "
                f"got input shape {input_shape}"
            )
        self.conv1.build(input_shape)
        feature_shape = (None, None, None, self.filters)
        self.bn1.build(feature_shape)
        self.conv2.build(feature_shape)
        self.bn2.build(feature_shape)

    def _shortcut(self, x):
        in_channels = x.shape[-1]
        if self.strides == 1 and in_channels == self.filters:
            return x
        if self.shortcut == "option_a":
            if self.strides > 1:
                x = x[:, :: self.strides, :: self.strides, :]
            extra = self.filters - in_channels
            before = extra // 2
            return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [before, extra - before]])
        if self.strides > 1:
            x = keras.ops.average_pool(x, self.strides, self.strides, padding="same")
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.filters - in_channels]])

    def call(self, inputs, training=None):
        x = inputs
        if self.strides > 1:
            x = keras.ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        x = self.conv1(x)
        x = keras.ops.relu(self.bn1(x, training=training))
        x = self.bn2(self.conv2(x), training=training)
        return keras.ops.relu(x + self._shortcut(inputs))

    def compute_output_shape(self, input_shape):
        def size(n):
            return None if n is None else -(-n // self.strides)

        return (input_shape[0], size(input_shape[1]), size(input_shape[2]), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "strides": self.strides,
                "shortcut": self.shortcut,
                "bn_epsilon": self.bn_epsilon,
                "bn_momentum": self.bn_momentum,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
