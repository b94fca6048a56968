"""assemble_classifier / split_classifier: structure, names, save/load with safe_mode, training."""

import keras
import numpy as np
import pytest

from models.backbones import build_backbone
from models.backbones.base import block_name
from models.classifier import ClassifierParts, assemble_classifier, split_classifier
from models.errors import ModelConfigError
from models.preprocessing import ChannelNormalization


@pytest.fixture(scope="module")
def resnet20():
    return build_backbone("resnet20", "default")


def images(batch=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")


def test_layers_are_named_and_ordered(resnet20):
    model = assemble_classifier(resnet20, num_classes=5, dropout=0.3)
    names = [layer.name for layer in model.layers]
    assert names == ["image", "normalization", "stem", *[block_name(i) for i in range(9)], "head", "dropout", "classifier"]
    assert model.input_shape == (None, None, None, 3)
    assert model.output_shape == (None, 5)
    assert model.get_layer("stem") is resnet20.stem  # shared, not copied
    normalization = model.get_layer("normalization")
    assert isinstance(normalization, ChannelNormalization)
    assert normalization.mean == resnet20.source_normalization["mean"]
    for size in (32, 41):
        assert keras.ops.convert_to_numpy(model(images(size=size))).shape == (2, 5)


def test_explicit_normalization_overrides_the_source_one(resnet20):
    stats = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2], "scale": 1 / 255}
    model = assemble_classifier(resnet20, num_classes=3, normalization=stats)
    assert model.get_layer("normalization").mean == stats["mean"]
    assert "dropout" not in [layer.name for layer in model.layers]


def test_source_classifier_is_the_pretrained_one(resnet20):
    model = assemble_classifier(resnet20, use_source_classifier=True)
    assert model.get_layer("classifier") is resnet20.source_classifier
    assert model.output_shape == (None, 10)


def test_save_load_split_round_trip(resnet20, tmp_path):
    model = assemble_classifier(resnet20, num_classes=4, dropout=0.1)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images(4), np.array([0, 1, 2, 3]), epochs=1, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = images(2, 36, seed=1)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5
    )
    parts = split_classifier(loaded)
    assert isinstance(parts, ClassifierParts)
    normalization, stem, blocks, head, classifier = parts
    assert [b.name for b in blocks] == [block_name(i) for i in range(9)]
    assert stem.name == "stem" and head.name == "head" and classifier.units == 4
    y = normalization(x)
    y = stem(y)
    for block in blocks:
        y = block(y)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(classifier(head(y))), keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-5
    )


def test_split_of_a_keras_application_backbone(tmp_path):
    backbone = build_backbone("mobilenet_v2", "none")
    model = assemble_classifier(backbone, num_classes=2)
    path = tmp_path / "mobilenet.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    parts = split_classifier(loaded)
    assert len(parts.blocks) == 17
    x = images(1, 48)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)), keras.ops.convert_to_numpy(model(x)), rtol=1e-4, atol=1e-4
    )


def test_errors_are_one_line():
    backbone = build_backbone("resnet26", "none")
    with pytest.raises(ModelConfigError, match="no source normalization") as info:
        assemble_classifier(backbone, num_classes=3)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelConfigError, match="has no source classifier"):
        assemble_classifier(backbone, normalization={"mean": [0] * 3, "std": [1] * 3}, use_source_classifier=True)
    with pytest.raises(ModelConfigError, match="num_classes"):
        assemble_classifier(backbone, num_classes=0, normalization={"mean": [0] * 3, "std": [1] * 3})
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)], name="plain")
    with pytest.raises(ModelConfigError, match="'plain' is not an assembled classifier"):
        split_classifier(plain)
