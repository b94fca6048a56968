"""ResNet-26, Visual Decathlon variant: the SpotTune backbone (Guo et al. 2019; Rebuffi et al. 2017).

Layout (METHODS.md section 1, authors' code): stem conv 3x3 3->32 + BN, no ReLU; 3 stages of 4
basic blocks, widths 64 / 128 / 256, the first block of each stage with stride 2
(72 -> 36 -> 18 -> 9) and a 2x2 average-pool + zero-channel shortcut; head BN, ReLU, global
average pooling. Convolutions initialised normal(0, sqrt(2 / (k * k * out_channels))).

No pretrained file ships with the project. `--weights PATH` reads a PyTorch state dict (.pth, .pt,
.t7, or .npz) in either layout of the authors' code:
- SpotTune (`spottune_models.py`): "conv1.weight", "bn1.*", "blocks.{s}.{b}.conv1.weight",
  "blocks.{s}.{b}.bn1.*", "blocks.{s}.{b}.conv2.1.weight", "blocks.{s}.{b}.bn2.*", "bn2.0.*",
  "linear.*" (the "parallel_blocks.*" fine-tuned copies are ignored);
- residual adapters (`models.py`, single task): "pre_layers_conv.conv.weight",
  "pre_layers_conv.bns.0.*", "layer{s+1}.{b}.conv1.conv.weight", "layer{s+1}.{b}.conv1.bns.0.*",
  "layer{s+1}.{b}.conv2.1.conv.weight", "layer{s+1}.{b}.conv2.1.bns.0.*", "end_bns.0.0.*",
  "linears.0.*".
The classifier ("linear") is optional; when present it becomes the source classifier.
"""

import re

import keras

from models.backbones.base import CLASSIFIER_NAME, HEAD_NAME, STEM_NAME, Backbone, block_name, build_parts
from models.backbones.basic_block import BasicBlock
from models.backbones.conv_stem import ConvStem
from models.backbones.pooling_head import PoolingHead
from models.weights import read_state_dict, resolve_weights, weights_format
from models.weights.keras_file import load_keras_weights
from models.weights.state_dict import assign_state_dict, batch_norm_targets, conv_targets, dense_targets

NAME = "resnet26"
WIDTHS = (64, 128, 256)
BLOCKS_PER_STAGE = 4
STEM_WIDTH = 32
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
NO_DEFAULT_WEIGHTS = (
    "resnet26 has no pretrained weights in this project: pass --weights PATH (a .pth/.pt SpotTune checkpoint "
    "or a Keras weights file) or --weights none"
)
_ADAPTER_RENAMES = [
    (r"^pre_layers_conv\.conv\.weight$", "conv1.weight"),
    (r"^pre_layers_conv\.bns\.0\.", "bn1."),
    (r"^layer(\d)\.(\d+)\.conv1\.conv\.weight$", lambda m: f"blocks.{int(m[1]) - 1}.{m[2]}.conv1.weight"),
    (r"^layer(\d)\.(\d+)\.conv1\.bns\.0\.", lambda m: f"blocks.{int(m[1]) - 1}.{m[2]}.bn1."),
    (r"^layer(\d)\.(\d+)\.conv2\.1\.conv\.weight$", lambda m: f"blocks.{int(m[1]) - 1}.{m[2]}.conv2.1.weight"),
    (r"^layer(\d)\.(\d+)\.conv2\.1\.bns\.0\.", lambda m: f"blocks.{int(m[1]) - 1}.{m[2]}.bn2."),
    (r"^end_bns\.0\.0\.", "bn2.0."),
    (r"^linears\.0\.", "linear."),
]


def kernel_initializer():
    """normal(0, sqrt(2 / (k * k * out_channels))), the authors' convolution init."""
    return keras.initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def to_spottune_layout(state):
    """Renames residual-adapters state-dict names to the SpotTune layout; others are kept."""
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in _ADAPTER_RENAMES:
            key, count = re.subn(pattern, replacement, key)
            if count:
                break
        renamed[key] = value
    return renamed


def torch_targets(backbone):
    """State-dict name (SpotTune layout) -> (Keras variable, layout transform)."""
    targets = {}
    targets.update(conv_targets("conv1.weight", backbone.stem.conv))
    targets.update(batch_norm_targets("bn1", backbone.stem.bn))
    for index, block in enumerate(backbone.blocks):
        prefix = f"blocks.{index // BLOCKS_PER_STAGE}.{index % BLOCKS_PER_STAGE}"
        targets.update(conv_targets(f"{prefix}.conv1.weight", block.conv1))
        targets.update(batch_norm_targets(f"{prefix}.bn1", block.bn1))
        targets.update(conv_targets(f"{prefix}.conv2.1.weight", block.conv2))
        targets.update(batch_norm_targets(f"{prefix}.bn2", block.bn2))
    targets.update(batch_norm_targets("bn2.0", backbone.head.bn))
    if backbone.source_classifier is not None:
        targets.update(dense_targets("linear", backbone.source_classifier))
    return targets


def build_resnet26(weights="default"):
    """The Visual Decathlon ResNet-26 as a `Backbone` (12 blocks, feature_dim 256, image size 72).

    Args:
        weights: "none" (random init), or the path of a PyTorch state dict (.pth/.pt/.t7/.npz,
            layouts in the module docstring) or of a Keras weights file (.weights.h5/.keras) saved
            from an adaptune classifier. "default" raises: no pretrained file ships.

    Returns:
        a `Backbone`; `source_normalization` is None (the Decathlon normalises each dataset with its
        own statistics).
    """
    path = resolve_weights(weights, NAME, [], missing_hint=NO_DEFAULT_WEIGHTS)

    # === Layers ===
    stem = ConvStem(
        STEM_WIDTH,
        3,
        bn_epsilon=BN_EPSILON,
        bn_momentum=BN_MOMENTUM,
        kernel_initializer=kernel_initializer(),
        name=STEM_NAME,
    )
    blocks = []
    for width in WIDTHS:
        for b in range(BLOCKS_PER_STAGE):
            blocks.append(
                BasicBlock(
                    width,
                    strides=2 if b == 0 else 1,
                    shortcut="avg_pool",
                    bn_epsilon=BN_EPSILON,
                    bn_momentum=BN_MOMENTUM,
                    kernel_initializer=kernel_initializer(),
                    name=block_name(len(blocks)),
                )
            )
    head = PoolingHead(batch_norm=True, activation="relu", bn_epsilon=BN_EPSILON, bn_momentum=BN_MOMENTUM, name=HEAD_NAME)
    feature_dim = build_parts(stem, blocks, head)

    backbone = Backbone(
        name=NAME,
        stem=stem,
        blocks=blocks,
        head=head,
        feature_dim=feature_dim,
        stages=[list(range(s * BLOCKS_PER_STAGE, (s + 1) * BLOCKS_PER_STAGE)) for s in range(len(WIDTHS))],
        source_normalization=None,
        source_classifier=None,
        source_class_names=None,
        default_image_size=72,
    )
    if path is None:
        return backbone

    kind = weights_format(path, NAME, allowed=("npz", "torch", "keras"))
    if kind == "keras":
        load_keras_weights(backbone, path)
    else:
        state = to_spottune_layout(read_state_dict(path))
        if "linear.weight" in state:
            classifier = keras.layers.Dense(state["linear.weight"].shape[0], name=CLASSIFIER_NAME)
            classifier.build((None, feature_dim))
            backbone.source_classifier = classifier
        assign_state_dict(state, torch_targets(backbone), path.name, NAME, ignore_prefixes=("parallel_",))
    backbone.weights_source = str(path)
    return backbone
