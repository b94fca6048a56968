"""The first convolution of a backbone, with its normalisation, activation and pooling."""

import keras

from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvStem(keras.layers.Layer):
    """Convolution, then optional BatchNorm, activation and max-pooling.

    One layer covers the stems of the backbones here: the CIFAR ResNets (conv 3x3 16, BN, ReLU),
    the Visual Decathlon ResNet-26 (conv 3x3 32, BN, no ReLU) and SqueezeNet 1.1 (conv 3x3 stride 2
    with bias, ReLU, max-pool 3x3 stride 2, all 'valid').

    `padding="torch"` pads `kernel_size // 2` pixels on every side and then convolves without
    padding, as PyTorch's `padding=k//2` does. For stride 1 it equals "same"; for stride 2 on an
    even input it does not (TensorFlow's "same" puts the extra pixel at the end only), so weights
    trained in PyTorch need it.

    Args:
        filters: number of output channels.
        kernel_size: int, square kernel size.
        strides: int, convolution stride.
        padding: "same", "valid" or "torch".
        use_bias: whether the convolution has a bias.
        batch_norm: whether a BatchNormalization follows the convolution.
        activation: activation name applied after the (normalised) convolution, or None.
        pool_size: size of a max-pooling ('valid') applied last, or None for no pooling.
        pool_strides: stride of that pooling; defaults to `pool_size`.
        bn_epsilon: BatchNormalization epsilon (PyTorch uses 1e-5).
        bn_momentum: BatchNormalization momentum (PyTorch's momentum 0.1 is Keras' 0.9).
        kernel_initializer: initializer of the convolution kernel.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `[batch, height, width, channels]`.
        training: bool, BatchNorm mode.

    Example:
    >>> stem = ConvStem(16, activation="relu", bn_epsilon=1e-5)
    >>> stem(keras.ops.zeros((2, 32, 32, 3))).shape
    (2, 32, 32, 16)

    Reference:
    - [He et al., Deep Residual Learning for Image Recognition](https://arxiv.org/abs/1512.03385)
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        strides=1,
        padding="same",
        use_bias=False,
        batch_norm=True,
        activation=None,
        pool_size=None,
        pool_strides=None,
        bn_epsilon=1e-3,
        bn_momentum=0.99,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if padding not in ("same", "valid", "torch"):
            raise ValueError(f"padding must be 'same', 'valid' or 'torch', got {padding!r}")
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.strides = int(strides)
        self.padding = padding
        self.use_bias = bool(use_bias)
        self.batch_norm = bool(batch_norm)
        self.activation = keras.activations.get(activation) if activation else None
        self.activation_name = activation
        self.pool_size = int(pool_size) if pool_size else None
        self.pool_strides = int(pool_strides) if pool_strides else self.pool_size
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

        # === Layers ===
        self.conv = keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            padding="valid" if padding == "torch" else padding,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="conv",
        )
        self.bn = None
        if self.batch_norm:
            self.bn = keras.layers.BatchNormalization(
                epsilon=self.bn_epsilon, momentum=self.bn_momentum, dtype=self.dtype_policy, name="bn"
            )
        self.pool = None
        if self.pool_size:
            self.pool = keras.layers.MaxPooling2D(
                self.pool_size, self.pool_strides, padding="valid", dtype=self.dtype_policy, name="pool"
            )

    def build(self, input_shape):
        self.conv.build(input_shape)
        if self.bn is not None:
            self.bn.build((None, None, None, self.filters))

    def call(self, inputs, training=None):
        x = inputs
        if self.padding == "torch":
            p = self.kernel_size // 2
            x = keras.ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x, training=training)
        if self.activation is not None:
            x = self.activation(x)
        if self.pool is not None:
            x = self.pool(x)
        return x

    def compute_output_shape(self, input_shape):
        batch, height, width = input_shape[0], input_shape[1], input_shape[2]

        def size(n):
            if n is None:
                return None
            if self.padding == "same":
                n = -(-n // self.strides)
            else:
                if self.padding == "torch":
                    n = n + 2 * (self.kernel_size // 2)
                n = (n - self.kernel_size) // self.strides + 1
            if self.pool_size:
                n = (n - self.pool_size) // self.pool_strides + 1
            return n

        return (batch, size(height), size(width), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "padding": self.padding,
                "use_bias": self.use_bias,
                "batch_norm": self.batch_norm,
                "activation": self.activation_name,
                "pool_size": self.pool_size,
                "pool_strides": self.pool_strides,
                "bn_epsilon": self.bn_epsilon,
                "bn_momentum": self.bn_momentum,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config
