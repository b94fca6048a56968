"""A light SpotTune policy that reads the shared stem's features instead of the raw image (issue 14)."""

import math

import keras
from keras import ops

from models.serialization import PACKAGE
from models.spottune.policy_network import conv_initializer

STEM_POLICY_WIDTHS = (16, 32, 64)


def stem_policy_multiply_adds(height, width, channels, widths=STEM_POLICY_WIDTHS, num_blocks=1):
    """Multiply-adds of one image through a `StemFeaturePolicy` on stem features `[height, width, channels]`.

        MACs = sum_i 9 * C_{i-1} * C_i * H_i * W_i  +  C_n * 2L,   H_i = ceil(H_{i-1} / 2), C_0 = channels

    (3x3 convolutions of stride 2, "same" padding; the Dense layer; BatchNorm, ReLU and the pooling
    are not counted, as `bench.routed_latency` counts none of them either).
    """
    total, h, w, c = 0, int(height), int(width), int(channels)
    for out in widths:
        h, w = math.ceil(h / 2), math.ceil(w / 2)
        total += 9 * c * int(out) * h * w
        c = int(out)
    return total + c * 2 * int(num_blocks)


@keras.saving.register_keras_serializable(package=PACKAGE)
class StemFeaturePolicy(keras.layers.Layer):
    """SpotTune policy on the stem's output: strided 3x3 convolutions, global average pooling, Dense.

        z_0 = stop_gradient(stem(x));   z_i = relu(BN(conv3x3_stride2(z_{i-1}))), i = 1..n;
        logits = Dense(mean_{h,w} z_n)  viewed as [batch, L, 2]  (index 1 = "use the fine-tuned block")

    The authors' policy network (`PolicyNetwork`, Guo et al. 2019) is a ResNet on the image that costs
    about as much as ResNet-20 itself (43 M multiply-adds at 32 px against the backbone's 41 M). This
    one reuses what the backbone computes anyway, the stem's features (shared by both copies of every
    block, so computed once), and adds only `len(widths)` small convolutions on them, each halving the
    resolution: with the default widths 16 / 32 / 64, 1.2 M multiply-adds on ResNet-20 at 32 px (stem
    output 32 x 32 x 16), 2.9 % of the backbone (`stem_policy_multiply_adds` has the formula;
    `python -m bench.routed_latency` prints the count).

    With `detach_input` (default) the policy's gradient stops at its input: the stem trains only
    through the classification path, as with the authors' separate policy network, whose gradient
    never reaches the backbone. Convolutions are initialised as the authors' policy network's,
    normal(0, sqrt(2 / (k * k * out))), the Dense layer as PyTorch's `nn.Linear`.

    Args:
        num_blocks: L, the number of routable blocks.
        widths: output channels of the strided convolutions, one per convolution.
        detach_input: stop the gradient at the input (the stem's features).
        bn_epsilon: BatchNormalization epsilon.
        bn_momentum: BatchNormalization momentum.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `[batch, height, width, channels]`, the stem's output.
        training: bool, BatchNorm mode.

    Returns:
        logits `[batch, num_blocks, 2]`.

    Example:
    >>> policy = StemFeaturePolicy(num_blocks=9)
    >>> policy(keras.ops.zeros((2, 32, 32, 16))).shape
    (2, 9, 2)

    Reference:
    - [Guo et al., SpotTune: Transfer Learning through Adaptive Fine-tuning](https://arxiv.org/abs/1811.08737)
      (the policy's role and the gate; reading the stem's features is adaptune's, issue 14).
    """

    input_source = "stem"  # what the builder and the export graph feed it (PolicyNetwork: the image)

    def __init__(self, num_blocks, widths=STEM_POLICY_WIDTHS, detach_input=True, bn_epsilon=1e-5, bn_momentum=0.9, **kwargs):
        super().__init__(**kwargs)
        if int(num_blocks) < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks!r}")
        if len(widths) < 1 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths needs at least one positive width, got {widths!r}")
        self.num_blocks = int(num_blocks)
        self.widths = tuple(int(w) for w in widths)
        self.detach_input = bool(detach_input)
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)

        # === Layers ===
        self.convs = [
            keras.layers.Conv2D(
                width,
                3,
                strides=2,
                padding="same",
                use_bias=False,
                kernel_initializer=conv_initializer(),
                dtype=self.dtype_policy,
                name=f"conv_{index + 1}",
            )
            for index, width in enumerate(self.widths)
        ]
        self.bns = [
            keras.layers.BatchNormalization(
                epsilon=self.bn_epsilon, momentum=self.bn_momentum, dtype=self.dtype_policy, name=f"bn_{index + 1}"
            )
            for index in range(len(self.widths))
        ]
        bound = 1.0 / math.sqrt(self.widths[-1])
        self.dense = keras.layers.Dense(
            2 * self.num_blocks,
            kernel_initializer=keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform"),
            bias_initializer=keras.initializers.RandomUniform(-bound, bound),
            dtype=self.dtype_policy,
            name="logits",
        )

    def build(self, input_shape):
        channels = input_shape[-1]
        for conv, bn, width in zip(self.convs, self.bns, self.widths):
            conv.build((None, None, None, channels))
            bn.build((None, None, None, width))
            channels = width
        self.dense.build((None, self.widths[-1]))

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        if self.detach_input:
            x = ops.stop_gradient(x)
        for conv, bn in zip(self.convs, self.bns):
            x = ops.relu(bn(conv(x), training=training))
        x = ops.mean(x, axis=(1, 2))
        return ops.reshape(self.dense(x), (-1, self.num_blocks, 2))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_blocks, 2)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_blocks": self.num_blocks,
                "widths": list(self.widths),
                "detach_input": self.detach_input,
                "bn_epsilon": self.bn_epsilon,
                "bn_momentum": self.bn_momentum,
            }
        )
        return config
