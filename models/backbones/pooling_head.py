"""The head of the small backbones: optional BatchNorm and activation, then global average pooling."""

import keras

from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class PoolingHead(keras.layers.Layer):
    """Turns the last block's feature map into a feature vector.

    CIFAR ResNets and SqueezeNet: global average pooling only. Visual Decathlon ResNet-26:
    BatchNorm, ReLU, global average pooling (its blocks end without a normalisation).

    Args:
        batch_norm: whether a BatchNormalization comes first.
        activation: activation name applied before pooling, or None.
        bn_epsilon: BatchNormalization epsilon (PyTorch uses 1e-5).
        bn_momentum: BatchNormalization momentum (PyTorch's momentum 0.1 is Keras' 0.9).
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `[batch, height, width, channels]`.
        training: bool, BatchNorm mode.

    Example:
    >>> head = PoolingHead(batch_norm=True, activation="relu")
    >>> head(keras.ops.ones((2, 9, 9, 256))).shape
    (2, 256)

    Reference:
    - [Lin et al., Network In Network](https://arxiv.org/abs/1312.4400) (global average pooling)
    """

    def __init__(self, batch_norm=False, activation=None, bn_epsilon=1e-5, bn_momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        self.batch_norm = bool(batch_norm)
        self.activation_name = activation
        self.activation = keras.activations.get(activation) if activation else None
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)

        # === Layers ===
        self.bn = None
        if self.batch_norm:
            self.bn = keras.layers.BatchNormalization(
                epsilon=self.bn_epsilon, momentum=self.bn_momentum, dtype=self.dtype_policy, name="bn"
            )

    def build(self, input_shape):
        if self.bn is not None:
            self.bn.build(input_shape)

    def call(self, inputs, training=None):
        x = inputs
        if self.bn is not None:
            x = self.bn(x, training=training)
        if self.activation is not None:
            x = self.activation(x)
        return keras.ops.mean(x, axis=(1, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "batch_norm": self.batch_norm,
                "activation": self.activation_name,
                "bn_epsilon": self.bn_epsilon,
                "bn_momentum": self.bn_momentum,
            }
        )
        return config
