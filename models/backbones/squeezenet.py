"""SqueezeNet 1.1 (ImageNet, no top), importing the Keras-2 weights of rcmalli/keras-squeezenet.

Layout (METHODS.md section 1): stem conv1 3x3 stride 2 (64, 'valid', with bias) + ReLU + max-pool
3x3 stride 2 ('valid'); 8 fire modules; head global average pooling (512 features).

Where the pools go: SqueezeNet 1.1 max-pools after fire3 and fire5. Here each of those pools is the
first operation of the next block (fire4, fire6: `FireModule(downsample=True)`), so that, as in
the ResNets, the first block of a stage is the one that changes the resolution, and a block's
output is the full-resolution output of its fire module. Stages: [fire2, fire3], [fire4, fire5],
[fire6 .. fire9].

Padding follows the Keras-2 file (see `FireModule`): everything 'valid' except the 3x3 expand
convolutions ('same'). Inputs must be at least 32 x 32 (three 'valid' poolings).

Input: ImageNet "caffe" preprocessing (RGB -> BGR, minus the channel means, no scaling).
"""

from models.backbones.base import HEAD_NAME, STEM_NAME, Backbone, block_name, build_parts
from models.backbones.conv_stem import ConvStem
from models.backbones.fire_module import FireModule
from models.backbones.pooling_head import PoolingHead
from models.weights import read_keras2_h5, resolve_weights, weights_format
from models.weights.keras_file import load_keras_weights
from models.weights.state_dict import assign_state_dict, identity

NAME = "squeezenet1_1"
DEFAULT_FILES = [
    "squeezenet1.1-imagenet/squeezenet1.1_imagenet_notop.h5",
    "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5",  # rcmalli's name in the Keras cache
]
# (Keras-2 name, squeeze filters, expand filters, max-pool first)
FIRE_MODULES = [
    ("fire2", 16, 64, False),
    ("fire3", 16, 64, False),
    ("fire4", 32, 128, True),
    ("fire5", 32, 128, False),
    ("fire6", 48, 192, True),
    ("fire7", 48, 192, False),
    ("fire8", 64, 256, False),
    ("fire9", 64, 256, False),
]
CAFFE_NORMALIZATION = {
    "mean": [103.939, 116.779, 123.68],
    "std": [1.0, 1.0, 1.0],
    "scale": 1.0,
    "channel_order": "bgr",
}
DEFAULT_IMAGE_SIZE = 128


def keras2_targets(backbone):
    """Keras-2 "<layer>/<weight>" name -> (Keras variable, identity) for every array of SqueezeNet 1.1."""
    targets = {"conv1/kernel": (backbone.stem.conv.kernel, identity), "conv1/bias": (backbone.stem.conv.bias, identity)}
    for (fire, *_), block in zip(FIRE_MODULES, backbone.blocks):
        for part, conv in (("squeeze1x1", block.squeeze), ("expand1x1", block.expand1x1), ("expand3x3", block.expand3x3)):
            targets[f"{fire}/{part}/kernel"] = (conv.kernel, identity)
            targets[f"{fire}/{part}/bias"] = (conv.bias, identity)
    return targets


def build_squeezenet1_1(weights="default"):
    """SqueezeNet 1.1 as a `Backbone` (8 blocks, feature_dim 512, default image size 128).

    Args:
        weights: "default" (the Keras-2 ImageNet no-top file on the weights search path), "none"
            (random init), or a path to a Keras-2 `.h5` file in the rcmalli layout or a Keras
            weights file (.weights.h5/.keras) saved from an adaptune classifier.

    Returns:
        a `Backbone` without a source classifier, with Caffe-style source normalization.
    """
    path = resolve_weights(weights, NAME, DEFAULT_FILES)

    # === Layers ===
    stem = ConvStem(
        64,
        3,
        strides=2,
        padding="valid",
        use_bias=True,
        batch_norm=False,
        activation="relu",
        pool_size=3,
        pool_strides=2,
        kernel_initializer="glorot_uniform",
        name=STEM_NAME,
    )
    blocks = [
        FireModule(squeeze, expand, downsample=pool, name=block_name(i))
        for i, (_, squeeze, expand, pool) in enumerate(FIRE_MODULES)
    ]
    head = PoolingHead(name=HEAD_NAME)
    feature_dim = build_parts(stem, blocks, head)

    backbone = Backbone(
        name=NAME,
        stem=stem,
        blocks=blocks,
        head=head,
        feature_dim=feature_dim,
        stages=[[0, 1], [2, 3], [4, 5, 6, 7]],
        source_normalization=dict(CAFFE_NORMALIZATION),
        source_classifier=None,
        source_class_names=None,
        default_image_size=DEFAULT_IMAGE_SIZE,
    )
    if path is None:
        return backbone
    kind = weights_format(path, NAME, allowed=("keras2_h5", "keras"))
    if kind == "keras":
        load_keras_weights(backbone, path)
    else:
        assign_state_dict(read_keras2_h5(path), keras2_targets(backbone), path.name, NAME)
    backbone.weights_source = str(path)
    return backbone
