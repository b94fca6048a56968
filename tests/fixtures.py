"""Shared fixtures of the model tests, in one place: a ResNet in miniature (as a backbone, a classifier
or a SpotTune model), seeded images and labels, and seeded perturbations of weights."""

import keras
import numpy as np

from models.backbones.base import Backbone, block_name, build_parts
from models.backbones.basic_block import BasicBlock
from models.backbones.conv_stem import ConvStem
from models.backbones.pooling_head import PoolingHead
from models.classifier import assemble_classifier

NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scale": 1 / 255}
NUM_CLASSES = 3
POLICY_WIDTHS = (4, 8, 8)


def tiny_backbone(stages=((0,), (1, 2)), seed=0, functional_blocks=False):
    """Stem (4 channels), blocks 4 / 8 (strided) / 8, GAP head; random weights and BatchNorm statistics, seeded.

    With `functional_blocks`, the blocks are small functional models (conv, BN, ReLU) instead of
    `BasicBlock`s, for code that must handle any block.
    """
    keras.utils.set_random_seed(seed)
    stem = ConvStem(4, 3, activation="relu", name="stem")
    if functional_blocks:
        blocks = []
        for index, (channels, width) in enumerate(((4, 4), (4, 8), (8, 8))):
            inputs = keras.Input((None, None, channels))
            x = keras.layers.Conv2D(width, 3, padding="same", name="conv")(inputs)
            x = keras.layers.BatchNormalization(name="bn")(x)
            blocks.append(keras.Model(inputs, keras.layers.ReLU()(x), name=block_name(index)))
    else:
        blocks = [BasicBlock(4, name="block_01"), BasicBlock(8, strides=2, name="block_02"), BasicBlock(8, name="block_03")]
    head = PoolingHead(name="head")
    feature_dim = build_parts(stem, blocks, head)
    # Non-trivial moving statistics, so inference-mode and training-mode BatchNorm differ visibly.
    rng = np.random.default_rng(seed)
    for layer in [stem, *blocks]:
        for variable in layer.weights:
            if variable.name == "moving_mean":
                variable.assign(rng.normal(scale=0.3, size=variable.shape))
            elif variable.name == "moving_variance":
                variable.assign(rng.uniform(0.5, 2.0, size=variable.shape))
    return Backbone("tiny", stem, blocks, head, feature_dim, [list(s) for s in stages], dict(NORMALIZATION), None, None, 8)


def tiny_classifier(seed=0, stages=((0,), (1, 2))):
    """(assembled classifier, backbone): every layer trainable."""
    backbone = tiny_backbone(stages, seed)
    model = assemble_classifier(backbone, NUM_CLASSES, normalization=NORMALIZATION)
    return model, backbone


def images(batch=4, size=8, seed=0):
    return (np.random.default_rng(seed).uniform(size=(batch, size, size, 3)) * 255).astype("float32")


def labels(batch=4, seed=0):
    return np.random.default_rng(seed + 1).integers(0, NUM_CLASSES, (batch,)).astype("int32")


def tiny_spottune(policy="per_image", backbone=None, num_classes=5, **kwargs):
    """A SpotTune classifier on `tiny_backbone()` with a small policy network (widths 4 / 8 / 8), seeded gate."""
    from models.spottune.classifier import build_spottune_classifier

    backbone = backbone or tiny_backbone()
    if policy == "fixed":
        kwargs.setdefault("decisions", [0, 1, 1])
    return build_spottune_classifier(backbone, num_classes, NORMALIZATION, policy=policy, policy_widths=POLICY_WIDTHS, seed=0, **kwargs)


def perturb(variables, scale=0.05, seed=1):
    """Add seeded noise to every variable, or to every trainable weight of a layer (moves it away from w0)."""
    if isinstance(variables, keras.layers.Layer):
        variables = variables.trainable_weights
    rng = np.random.default_rng(seed)
    for variable in variables:
        variable.assign(keras.ops.convert_to_numpy(variable) + rng.normal(scale=scale, size=variable.shape).astype("float32"))
