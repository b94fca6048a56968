"""Where DELTA reads a hooked block's feature map: the raw output of its last convolution.

The DELTA authors (and Transfer-Learning-Library) hook the last convolution of the last block of
each stage and read its raw output, before that block's BatchNorm and residual add. For a
`BasicBlock`, `out = relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))`, the hooked map is
`conv2(relu(bn1(conv1(x))))`. Blocks of other kinds (SqueezeNet's fire modules, the
`keras.applications` blocks, SpotTune's routed blocks, whose two copies have no common
convolution) are read at their output: our fallback, see docs/methods/delta.md.

The hooked map is recomputed from the block's input with the block's own layers, so the trainer's
single forward pass supplies it (the block's input is one of its outputs). BatchNorm inside that
recomputation normalises as the block does (batch statistics in training when the layer is
trainable, moving statistics otherwise) but never updates the moving statistics, which the
block's own call already did.
"""

import keras
from keras import ops

from models.backbones.basic_block import BasicBlock


def hooks_last_convolution(block):
    """True when DELTA reads `block` at its last convolution's raw output (a `BasicBlock`)."""
    return isinstance(block, BasicBlock)


def last_convolution(block):
    """The `Conv2D` layer whose raw output DELTA reads in `block` (`conv2` of a `BasicBlock`)."""
    if not hooks_last_convolution(block):
        raise ValueError(f"block {block.name!r} ({type(block).__name__}) has no hooked convolution; DELTA reads its output")
    return block.conv2


def normalize_without_update(layer, x, training=None):
    """`gamma * (x - mean) / sqrt(var + eps) + beta` of a BatchNormalization `layer`, statistics not updated.

    Batch statistics when `training` and the layer is trainable (as `layer(x, training=True)`
    computes them), moving statistics otherwise.
    """
    x = ops.cast(x, "float32")
    if training and layer.trainable:
        mean, variance = ops.moments(x, axes=list(range(len(x.shape) - 1)))
    else:
        mean, variance = ops.cast(layer.moving_mean, "float32"), ops.cast(layer.moving_variance, "float32")
    y = (x - mean) * ops.rsqrt(variance + layer.epsilon)
    if layer.scale:
        y = y * ops.cast(layer.gamma, "float32")
    if layer.center:
        y = y + ops.cast(layer.beta, "float32")
    return y


def last_convolution_output(block, inputs, training=None):
    """`conv2(relu(bn1(conv1(x))))` of a `BasicBlock` for its input `inputs`: the map DELTA hooks.

    A strided block pads one pixel on each side before `conv1`, as the block itself does.
    """
    x = inputs
    if block.strides > 1:
        x = ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    h = ops.relu(normalize_without_update(block.bn1, block.conv1(x), training))
    return block.conv2(h)


class LastConvolutionOutput(keras.layers.Layer):
    """A functional-graph node computing `last_convolution_output(block, x)` with the block's own weights.

    Used inside the pretrained feature extractor of `models.regularizers.parts.feature_extractor`
    (never saved on its own: the extractor belongs to a `DeltaPenalty`).

    Args:
        block: the `BasicBlock` whose hooked convolution is read.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: the block's input.
        training: BatchNorm mode, as for the block.
    """

    def __init__(self, block, **kwargs):
        super().__init__(**kwargs)
        self.block = block

    def call(self, inputs, training=None):
        return last_convolution_output(self.block, inputs, training)

    def compute_output_shape(self, input_shape):
        return self.block.compute_output_shape(input_shape)
