"""Tiny networks for the regulariser tests: a ResNet in miniature, as a classifier or a SpotTune model."""

import keras
import numpy as np

from models.backbones.base import Backbone, build_parts
from models.backbones.basic_block import BasicBlock
from models.backbones.conv_stem import ConvStem
from models.backbones.pooling_head import PoolingHead
from models.classifier import assemble_classifier

NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scale": 1 / 255}
NUM_CLASSES = 3


def tiny_backbone(stages=((0,), (1, 2)), seed=0):
    """Stem (4 channels), blocks 4 / 8 (strided) / 8, GAP head; random weights, seeded."""
    keras.utils.set_random_seed(seed)
    stem = ConvStem(4, 3, activation="relu", name="stem")
    blocks = [BasicBlock(4, name="block_01"), BasicBlock(8, strides=2, name="block_02"), BasicBlock(8, name="block_03")]
    head = PoolingHead(name="head")
    feature_dim = build_parts(stem, blocks, head)
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


def perturb(variables, scale=0.05, seed=1):
    """Add seeded noise to every variable (moves the network away from w0)."""
    rng = np.random.default_rng(seed)
    for variable in variables:
        variable.assign(keras.ops.convert_to_numpy(variable) + rng.normal(scale=scale, size=variable.shape).astype("float32"))
