"""ResNet-20/32/44/56 for CIFAR-10 (He et al. 2016), importing akamaster/pytorch_resnet_cifar10 weights.

Layout (METHODS.md section 1): stem conv 3x3 16 + BN + ReLU; 3 stages of n = (depth - 2) / 6
basic blocks, widths 16 / 32 / 64, the first block of stages 2 and 3 with stride 2 and an
"option A" shortcut; head global average pooling; source classifier Dense(10).

The pretrained files are PyTorch state dicts saved as `.npz`: "conv1.weight", "bn1.*",
"layer{s}.{b}.conv1.weight", "layer{s}.{b}.bn1.*", "layer{s}.{b}.conv2.weight",
"layer{s}.{b}.bn2.*", "linear.weight", "linear.bias".
"""

import keras

from models.backbones.base import CLASSIFIER_NAME, HEAD_NAME, STEM_NAME, Backbone, block_name, build_parts
from models.backbones.basic_block import BasicBlock
from models.backbones.conv_stem import ConvStem
from models.backbones.pooling_head import PoolingHead
from models.errors import ModelConfigError
from models.weights import read_state_dict, resolve_weights, weights_format
from models.weights.keras_file import load_keras_weights
from models.weights.state_dict import assign_state_dict, batch_norm_targets, conv_targets, dense_targets

DEPTHS = (20, 32, 44, 56)
WIDTHS = (16, 32, 64)
BN_EPSILON = 1e-5  # PyTorch's; Keras' default 1e-3 would distort the imported network
BN_MOMENTUM = 0.9  # PyTorch's momentum 0.1
CIFAR10_CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# The akamaster models were trained on RGB in [0, 1] normalised with the ImageNet statistics.
SOURCE_NORMALIZATION = {
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "scale": 1.0 / 255.0,
    "channel_order": "rgb",
}


def torch_targets(backbone, blocks_per_stage):
    """State-dict name -> (Keras variable, layout transform) for every array of a CIFAR ResNet."""
    targets = {}
    targets.update(conv_targets("conv1.weight", backbone.stem.conv))
    targets.update(batch_norm_targets("bn1", backbone.stem.bn))
    for index, block in enumerate(backbone.blocks):
        prefix = f"layer{index // blocks_per_stage + 1}.{index % blocks_per_stage}"
        targets.update(conv_targets(f"{prefix}.conv1.weight", block.conv1))
        targets.update(batch_norm_targets(f"{prefix}.bn1", block.bn1))
        targets.update(conv_targets(f"{prefix}.conv2.weight", block.conv2))
        targets.update(batch_norm_targets(f"{prefix}.bn2", block.bn2))
    targets.update(dense_targets("linear", backbone.source_classifier))
    return targets


def build_resnet_cifar(depth, weights="default"):
    """A CIFAR ResNet of `depth` layers as a `Backbone`.

    Args:
        depth: 20, 32, 44 or 56.
        weights: "default" (resnet-cifar10/resnet{depth}.npz on the weights search path), "none"
            (random init, no source classifier), or the path of a `.npz` / `.pth` / `.pt` state dict
            in the akamaster layout, or of a Keras weights file (`.weights.h5`, `.keras`) saved from
            an adaptune classifier on this backbone.

    Returns:
        a `Backbone` with 3n blocks and feature_dim 64.
    """
    if depth not in DEPTHS:
        raise ModelConfigError(f"CIFAR ResNet depth must be one of {DEPTHS}, got {depth}")
    name = f"resnet{depth}"
    path = resolve_weights(weights, name, [f"resnet-cifar10/{name}.npz"])
    n = (depth - 2) // 6

    # === Layers ===
    stem = ConvStem(
        WIDTHS[0], 3, activation="relu", bn_epsilon=BN_EPSILON, bn_momentum=BN_MOMENTUM, name=STEM_NAME
    )
    blocks = []
    for stage, width in enumerate(WIDTHS):
        for b in range(n):
            strides = 2 if (stage > 0 and b == 0) else 1
            blocks.append(
                BasicBlock(
                    width,
                    strides=strides,
                    shortcut="option_a",
                    bn_epsilon=BN_EPSILON,
                    bn_momentum=BN_MOMENTUM,
                    name=block_name(len(blocks)),
                )
            )
    head = PoolingHead(name=HEAD_NAME)
    feature_dim = build_parts(stem, blocks, head)
    classifier = keras.layers.Dense(len(CIFAR10_CLASS_NAMES), name=CLASSIFIER_NAME)
    classifier.build((None, feature_dim))

    backbone = Backbone(
        name=name,
        stem=stem,
        blocks=blocks,
        head=head,
        feature_dim=feature_dim,
        stages=[list(range(s * n, (s + 1) * n)) for s in range(len(WIDTHS))],
        source_normalization=dict(SOURCE_NORMALIZATION),
        source_classifier=classifier,
        source_class_names=list(CIFAR10_CLASS_NAMES),
        default_image_size=32,
    )
    if path is None:
        backbone.source_classifier = None
        backbone.source_class_names = None
        return backbone

    kind = weights_format(path, name, allowed=("npz", "torch", "keras"))
    if kind == "keras":
        load_keras_weights(backbone, path)
    else:
        assign_state_dict(read_state_dict(path), torch_targets(backbone, n), path.name, name)
    backbone.weights_source = str(path)
    return backbone
