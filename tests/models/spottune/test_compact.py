"""Compact models: one copy per block, same outputs as the routed model, one backbone's size."""

import keras
import numpy as np
import pytest

from models.classifier import assemble_classifier, split_classifier
from models.errors import ModelConfigError
from models.spottune.classifier import routed_blocks
from models.spottune.compact import compact_classifier, fixed_decisions
from tests.fixtures import NORMALIZATION, images, perturb, tiny_backbone, tiny_spottune

PLAIN_NAMES = ["image", "normalization", "stem", "block_01", "block_02", "block_03", "head", "classifier"]


def _perturbed(model, seed=0):
    for index, block in enumerate(routed_blocks(model)):
        perturb(block.finetuned, scale=0.2, seed=seed + index)
    return model


def _assert_same_outputs(compact, routed, x):
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(compact(x, training=False)),
        keras.ops.convert_to_numpy(routed(x, training=False)),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("decisions", [[0, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 1]])
def test_compact_of_fixed_decisions_matches_the_routed_model(decisions):
    routed = _perturbed(tiny_spottune("fixed", decisions=decisions))
    compact = compact_classifier(routed)
    assert [layer.name for layer in compact.layers] == PLAIN_NAMES
    _assert_same_outputs(compact, routed, images(4, 12))
    plain = assemble_classifier(tiny_backbone(), 5, NORMALIZATION)
    assert compact.count_params() == plain.count_params()
    assert len(compact.trainable_variables) == len(plain.trainable_variables)
    assert len(split_classifier(compact).blocks) == 3
    # The kept copies are the right ones, and independent of the routed model.
    for index, (block, decision) in enumerate(zip(routed_blocks(routed), decisions)):
        source = block.finetuned if decision else block.pretrained
        kept = compact.get_layer(f"block_{index + 1:02d}")
        for a, b in zip(kept.get_weights(), source.get_weights()):
            np.testing.assert_array_equal(a, b)
        assert kept is not source


def test_compact_of_a_global_policy_uses_its_deterministic_decisions():
    routed = _perturbed(tiny_spottune("global", global_k={"target_k": 1}))
    routed.get_layer("policy").logits.assign(np.array([[1.0, -1.0], [0.2, 0.9], [-3.0, 2.0]], "float32"))
    assert fixed_decisions(routed) == [0, 1, 1]
    assert fixed_decisions(routed, k=1) == [0, 0, 1]
    assert fixed_decisions(routed, k=3) == [1, 1, 1]
    compact = compact_classifier(routed)
    _assert_same_outputs(compact, routed, images(4, 8))
    assert compact.count_params() == assemble_classifier(tiny_backbone(), 5, NORMALIZATION).count_params()
    # Explicit decisions (e.g. exactly k) are honoured.
    top1 = compact_classifier(routed, decisions=fixed_decisions(routed, k=1))
    assert not np.allclose(top1(images(4, 8)), compact(images(4, 8)))


def test_compact_of_functional_blocks_keeps_the_plain_names():
    routed = _perturbed(tiny_spottune("fixed", backbone=tiny_backbone(functional_blocks=True), decisions=[1, 0, 1]))
    compact = compact_classifier(routed)
    assert [layer.name for layer in compact.layers] == PLAIN_NAMES
    _assert_same_outputs(compact, routed, images(3, 8))


def test_per_image_policy_has_no_compact_form():
    routed = tiny_spottune("per_image")
    with pytest.raises(ModelConfigError):
        fixed_decisions(routed)
    with pytest.raises(ModelConfigError):
        compact_classifier(routed)
    with pytest.raises(ModelConfigError):
        compact_classifier(routed, decisions=[0, 1])
    # With explicit decisions it can still be cut (it then no longer matches the per-image routing).
    assert compact_classifier(routed, decisions=[0, 1, 1]).count_params() == (
        assemble_classifier(tiny_backbone(), 5, NORMALIZATION).count_params()
    )


def test_compact_from_a_loaded_routed_model_saves_and_loads(tmp_path):
    routed = _perturbed(tiny_spottune("fixed", decisions=[0, 1, 0], dropout=0.1))
    routed.save(tmp_path / "routed.keras")
    loaded_routed = keras.saving.load_model(tmp_path / "routed.keras", safe_mode=True)
    compact = compact_classifier(loaded_routed)
    assert "dropout" in [layer.name for layer in compact.layers]
    x = images(4, 8)
    _assert_same_outputs(compact, routed, x)
    compact.save(tmp_path / "compact.keras")
    loaded = keras.saving.load_model(tmp_path / "compact.keras", safe_mode=True)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded(x, training=False)), keras.ops.convert_to_numpy(compact(x, training=False))
    )


def test_resnet20_compact_matches_and_has_one_backbone_of_parameters():
    from models.backbones import build_backbone

    decisions = [0, 0, 0, 0, 0, 0, 1, 1, 1]  # "last-3"
    routed = _perturbed(
        tiny_spottune("fixed", backbone=build_backbone("resnet20", weights="none"), decisions=decisions)
    )
    compact = compact_classifier(routed)
    _assert_same_outputs(compact, routed, images(2, 32))
    plain = assemble_classifier(build_backbone("resnet20", weights="none"), 5, NORMALIZATION)
    assert compact.count_params() == plain.count_params()
    assert [layer.name for layer in compact.layers] == [layer.name for layer in plain.layers]


def test_pretrained_resnet20_compact_matches_the_routed_model_on_real_images():
    """The issue's check: max |compact - routed| <= 1e-5 on real photographs, pretrained weights."""
    from models.backbones import build_backbone
    from pipelines import load_dataset

    decisions = [0, 1, 0, 0, 1, 0, 0, 1, 1]
    routed = _perturbed(tiny_spottune("fixed", backbone=build_backbone("resnet20", weights="default"), decisions=decisions),
                        seed=7)
    compact = compact_classifier(routed)
    real_images, _ = next(iter(load_dataset("default").batches("test", 32, training=False, image_size=32)))
    _assert_same_outputs(compact, routed, real_images)
