"""Stage ends found from an assembled classifier agree with the backbone's declared stages; the
frozen teacher copy is frozen, independent and in inference mode."""

import numpy as np
import pytest

from models.backbones import build_backbone
from models.classifier import assemble_classifier
from models.teacher.frozen_teacher import frozen_copy
from models.teacher.stages import backbone_stage_ends, feature_layer_names, stage_ends, stage_segments
from tests.fixtures import NORMALIZATION, images, perturb, tiny_classifier


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2"])
def test_stage_ends_of_the_network_are_the_backbones_stages(name):
    backbone = build_backbone(name, weights="none")
    network = assemble_classifier(backbone, 3, normalization=NORMALIZATION)
    assert stage_ends(network) == backbone_stage_ends(backbone)


def test_stage_names_and_segments():
    network, backbone = tiny_classifier()
    ends = stage_ends(network)
    assert ends == [0, 2] == backbone_stage_ends(backbone)
    assert feature_layer_names(ends) == ["stem", "block_01", "block_03"]
    assert stage_segments(ends) == [[0], [1, 2]]


def test_frozen_copy_keeps_the_pretrained_features_and_has_no_trainable_weights():
    network, _ = tiny_classifier()
    teacher = frozen_copy(network, stage_ends(network))
    x = images()
    before = [np.asarray(f) for f in teacher(x, training=False)]
    assert teacher.trainable_weights == []
    perturb(network.get_layer("block_01"))  # the student moves; the copy does not
    teacher(x, training=True)  # and its BatchNorm never updates statistics
    after = [np.asarray(f) for f in teacher(x, training=False)]
    assert len(after) == 3
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
