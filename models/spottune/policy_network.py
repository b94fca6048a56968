"""SpotTune's per-image policy network (docs/methods/spottune.md, authors' `agent_net.py`)."""

import math

import keras
from keras import ops

from models.backbones.basic_block import BasicBlock
from models.serialization import PACKAGE


def conv_initializer():
    """The authors' convolution init, normal(0, sqrt(2 / (k * k * out_channels)))."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


@keras.saving.register_keras_serializable(package=PACKAGE)
class PolicyNetwork(keras.layers.Layer):
    """A small ResNet that decides, per image, which blocks use their fine-tuned copy.

    The authors' agent: conv 3x3 (widths[0] = 32 channels) + BatchNorm (no ReLU); one basic block
    per stage, widths 64 / 128 / 256, each with stride 2 and the "average pool + zero channels"
    shortcut; BatchNorm, ReLU, global average pooling; a Dense layer with `2 * num_blocks` outputs,
    viewed as `[batch, num_blocks, 2]` logits (index 1 = "use the fine-tuned block"). Convolutions
    are initialised normal(0, sqrt(2 / (k * k * out))), the Dense layer as PyTorch's `nn.Linear`.
    BatchNorm uses PyTorch's epsilon and momentum.

    The input is the normalised image the backbone sees. With `image_size`, the policy first
    resizes it (bilinear) to `image_size` x `image_size`, which makes it cheaper on large inputs;
    None (the default) uses the image as it comes, as the authors do.

    Args:
        num_blocks: L, the number of routable blocks.
        widths: channels of the stem and of the block of each stage (one stride-2 block per entry
            after the first).
        image_size: side the input is resized to, or None for no resizing.
        bn_epsilon: BatchNormalization epsilon.
        bn_momentum: BatchNormalization momentum.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: float tensor `[batch, height, width, channels]`, the normalised image.
        training: bool, BatchNorm mode.

    Returns:
        logits `[batch, num_blocks, 2]`.

    Example:
    >>> policy = PolicyNetwork(num_blocks=9)
    >>> policy(keras.ops.zeros((2, 32, 32, 3))).shape
    (2, 9, 2)

    Reference:
    - [Guo et al., SpotTune: Transfer Learning through Adaptive Fine-tuning](https://arxiv.org/abs/1811.08737)
    """

    def __init__(
        self, num_blocks, widths=(32, 64, 128, 256), image_size=None, bn_epsilon=1e-5, bn_momentum=0.9, **kwargs
    ):
        super().__init__(**kwargs)
        if int(num_blocks) < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks!r}")
        if len(widths) < 1:
            raise ValueError("widths needs at least the stem width")
        self.num_blocks = int(num_blocks)
        self.widths = tuple(int(w) for w in widths)
        self.image_size = None if image_size is None else int(image_size)
        self.bn_epsilon = float(bn_epsilon)
        self.bn_momentum = float(bn_momentum)

        # === Layers ===
        def bn(name):
            return keras.layers.BatchNormalization(
                epsilon=self.bn_epsilon, momentum=self.bn_momentum, dtype=self.dtype_policy, name=name
            )

        self.stem_conv = keras.layers.Conv2D(
            self.widths[0],
            3,
            padding="same",
            use_bias=False,
            kernel_initializer=conv_initializer(),
            dtype=self.dtype_policy,
            name="stem_conv",
        )
        self.stem_bn = bn("stem_bn")
        self.stages = [
            BasicBlock(
                width,
                strides=2,
                shortcut="avg_pool",
                bn_epsilon=self.bn_epsilon,
                bn_momentum=self.bn_momentum,
                kernel_initializer=conv_initializer(),
                dtype=self.dtype_policy,
                name=f"stage_{index + 1}",
            )
            for index, width in enumerate(self.widths[1:])
        ]
        self.head_bn = bn("head_bn")
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
        self.stem_conv.build((None, None, None, channels))
        shape = (None, None, None, self.widths[0])
        self.stem_bn.build(shape)
        for stage in self.stages:
            stage.build(shape)
            shape = (None, None, None, stage.filters)
        self.head_bn.build(shape)
        self.dense.build((None, self.widths[-1]))

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        if self.image_size is not None:
            x = ops.image.resize(x, (self.image_size, self.image_size), interpolation="bilinear")
        x = self.stem_bn(self.stem_conv(x), training=training)
        for stage in self.stages:
            x = stage(x, training=training)
        x = ops.relu(self.head_bn(x, training=training))
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
                "image_size": self.image_size,
                "bn_epsilon": self.bn_epsilon,
                "bn_momentum": self.bn_momentum,
            }
        )
        return config
