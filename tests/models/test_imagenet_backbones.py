"""ImageNet MobileNet V2 / V1 backbones: the import lands photographs on their classes, folded
BatchNorm is given back its scale without changing the function, and bad files fail in one line."""

import numpy as np
import pytest

import keras

from models.backbones import BACKBONES, build_backbone, recipe_of
from models.classifier import assemble_classifier
from models.errors import ModelConfigError
from models.weights.batchnorm_folding import batchnorm_pairs, is_folded, unfold_batchnorm_scale
from pipelines.images import decode_file

# ../shared/data/imagenet-check/README.md: where a correct ImageNet import puts these photographs
# (Keras' 1000-class numbering).
EXPECTED_CLASSES = {
    "cat.bmp": {285, 281},  # Egyptian cat, tabby
    "parrot.jpg": {88},  # macaw
    "hot_dog.jpg": {934},  # hotdog
    "dragonfly.bmp": {319},
    "grace_hopper.bmp": {652},  # military uniform
}
WEIGHTS = {
    "mobilenet_v2": ("mobilenet_v2_1.0_224_imagenet.h5", keras.applications.MobileNetV2, {}),
    "mobilenet_0.75": ("mobilenet_0.75_192_imagenet.h5", keras.applications.MobileNet, {"alpha": 0.75}),
}


def photographs(shared_dir, size=224):
    folder = shared_dir / "data" / "imagenet-check"
    names = sorted(EXPECTED_CLASSES)
    return names, np.stack([decode_file(folder / name, size) for name in names]).astype("float32")


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_default_imagenet_weights_classify_the_check_photographs(name, shared_dir):
    backbone = build_backbone(name)
    assert backbone.weights_source.endswith(WEIGHTS[name][0])  # the file with the classifier comes first
    assert backbone.source_classifier is not None and len(backbone.source_class_names) == 1000
    assert backbone.source_class_names[88].startswith("macaw")
    names, images = photographs(shared_dir)
    logits = keras.ops.convert_to_numpy(assemble_classifier(backbone, use_source_classifier=True)(images, training=False))
    # Centre-cropped as in evaluation, grace_hopper.bmp loses part of the uniform to her cap
    # (mortarboard first, military uniform second): top-2 for every photograph, top-1 for four of five.
    top1 = 0
    for file, row in zip(names, logits):
        best = [int(i) for i in np.argsort(-row)[:2]]
        assert EXPECTED_CLASSES[file] & set(best), (file, [backbone.source_class_names[i] for i in best])
        top1 += best[0] in EXPECTED_CLASSES[file]
    assert top1 >= 4


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_unfolding_keeps_the_function_of_the_keras_application(name, shared_dir):
    """Our backbone (BatchNorm scale moved out of the kernels) computes what keras.applications computes
    with the same file loaded as it is, in inference mode."""
    file, application, kwargs = WEIGHTS[name]
    path = shared_dir / "weights" / "mobilenet-imagenet" / file
    backbone = build_backbone(name, str(path))
    assert backbone.folded_batchnorm_layers == len(batchnorm_pairs(application(weights=None, input_shape=(64, 64, 3), **kwargs)))
    reference = application(weights=str(path), input_shape=(224, 224, 3), **kwargs)
    _, images = photographs(shared_dir)
    expected = keras.ops.convert_to_numpy(reference(images / 127.5 - 1.0, training=False)).reshape(len(images), -1)
    logits = keras.ops.convert_to_numpy(assemble_classifier(backbone, use_source_classifier=True)(images, training=False))
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


def test_unfolding_gives_every_filter_unit_output_variance_and_leaves_ordinary_weights_alone(shared_dir):
    path = shared_dir / "weights" / "mobilenet-imagenet" / "mobilenet_v2_1.0_224_imagenet_no_top.h5"
    model = keras.applications.MobileNetV2(weights=str(path), include_top=False, input_shape=(96, 96, 3))
    pairs = batchnorm_pairs(model)
    assert is_folded(pairs)
    assert unfold_batchnorm_scale(model) == len(pairs)
    assert not is_folded(pairs)
    for _, bn in pairs:  # the stored variance of every conv output is now (v / (v + eps)) <= 1
        variance = keras.ops.convert_to_numpy(bn.moving_variance)
        assert np.all(variance <= 1.0 + 1e-6) and np.median(variance) > 0.9
    assert unfold_batchnorm_scale(model) == 0  # applied once only
    fresh = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(96, 96, 3))
    before = [keras.ops.convert_to_numpy(v) for v in fresh.weights]
    assert unfold_batchnorm_scale(fresh) == 0  # gamma 1, variance 1: initial values, not folded ones
    for old, variable in zip(before, fresh.weights):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(variable))


def test_mobilenet_v1_blocks_stages_and_widths():
    assert {"mobilenet", "mobilenet_0.75", "mobilenet_0.5", "mobilenet_0.25", "mobilenet_v2", "mobilenet_v2_0.35"} <= set(BACKBONES)
    backbone = build_backbone("mobilenet_0.25", "none")
    assert backbone.num_blocks == 13 and sorted(sum(backbone.stages, [])) == list(range(13))
    assert backbone.feature_dim == 256  # 1024 * 0.25
    model = assemble_classifier(backbone, 4)
    assert model(np.zeros((2, 64, 64, 3), "float32")).shape == (2, 4)
    # Each block halves the resolution where its depthwise convolution has stride 2 (blocks 2, 4, 6, 12).
    x = backbone.stem(np.zeros((1, 64, 64, 3), "float32"))
    sizes = []
    for block in backbone.blocks:
        x = block(x)
        sizes.append(int(x.shape[1]))
    assert sizes == [32, 16, 16, 8, 8, 4, 4, 4, 4, 4, 4, 2, 2]


def test_a_file_of_another_width_is_a_one_line_error(shared_dir):
    path = shared_dir / "weights" / "mobilenet-imagenet" / "mobilenet_0.75_192_imagenet_no_top.h5"
    with pytest.raises(ModelConfigError, match="another width") as info:
        build_backbone("mobilenet", str(path))
    assert "\n" not in str(info.value)


def test_imagenet_backbones_declare_frozen_batchnorm_and_flags_win():
    from app.train import build_parser, config_from_args

    assert recipe_of("mobilenet_v2") == {"bn": "frozen"} and recipe_of("resnet20") == {}
    assert config_from_args(build_parser().parse_args(["--backbone", "mobilenet_v2"])).bn == "frozen"
    assert config_from_args(build_parser().parse_args(["--backbone", "mobilenet_v2", "--bn", "train"])).bn == "train"
    assert config_from_args(build_parser().parse_args(["--backbone", "mobilenet_v2", "--weights", "none"])).bn == "train"
    assert config_from_args(build_parser().parse_args(["--backbone", "resnet20"])).bn == "train"
