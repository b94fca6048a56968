"""ImageNet MobileNet V2 / V1 backbones: the import lands photographs on their classes and computes
what keras.applications computes, the recipe they fine-tune with, and bad files fail in one line."""

import numpy as np
import pytest

import keras

from models.backbones import BACKBONES, build_backbone, recipe_of
from models.classifier import assemble_classifier
from models.errors import ModelConfigError
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
def test_the_backbone_computes_what_the_keras_application_computes(name, shared_dir):
    """Cut into stem, blocks, head and our source classifier (a Dense on logits, the file's top read by
    layer name), the network gives keras.applications' probabilities with the same file, in inference mode."""
    file, application, kwargs = WEIGHTS[name]
    path = shared_dir / "weights" / "mobilenet-imagenet" / file
    backbone = build_backbone(name, str(path))
    reference = application(weights=str(path), input_shape=(224, 224, 3), **kwargs)
    _, images = photographs(shared_dir)
    expected = keras.ops.convert_to_numpy(reference(images / 127.5 - 1.0, training=False)).reshape(len(images), -1)
    logits = keras.ops.convert_to_numpy(assemble_classifier(backbone, use_source_classifier=True)(images, training=False))
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


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

    assert recipe_of("mobilenet_v2") == {"bn": "frozen", "lr": 0.001, "head_lr_ratio": 10.0} and recipe_of("resnet20") == {}
    config = config_from_args(build_parser().parse_args(["--backbone", "mobilenet_v2"]))
    assert (config.bn, config.lr) == ("frozen", 0.001)
    assert config_from_args(build_parser().parse_args(["--backbone", "mobilenet", "--lr", "0.01"])).lr == 0.01
    assert config_from_args(build_parser().parse_args(["--backbone", "mobilenet_v2", "--bn", "train"])).bn == "train"
    assert config_from_args(build_parser().parse_args(["--backbone", "mobilenet_v2", "--weights", "none"])).bn == "train"
    assert config_from_args(build_parser().parse_args(["--backbone", "resnet20"])).bn == "train"


def test_the_fisher_of_an_imagenet_backbone_uses_its_source_classifier():
    """L2-SP-Fisher takes the source task's log-likelihood: the ImageNet classifier on the network's
    features (a functional head's own output tensor is not part of the network: its call site is)."""
    from app.regularization import fisher_model

    backbone = build_backbone("mobilenet_0.75")
    network = assemble_classifier(backbone, 10)
    model, head = fisher_model(network, backbone)
    assert head == "source"
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    features = keras.Model(network.input, network.get_layer("classifier").input)(x)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(backbone.source_classifier(features)), rtol=1e-5, atol=1e-5
    )


def test_delta_reads_the_blocks_of_a_functional_backbone_where_the_network_calls_them():
    """DELTA's feature term on MobileNet (functional sub-model blocks): zero at w0, positive after a change."""
    from models.regularizers import build_penalty_terms
    from models.regularizers.parts import hook_layer_names

    backbone = build_backbone("mobilenet_0.25", "none")
    network = assemble_classifier(backbone, 3)
    hooks = hook_layer_names(backbone)
    attention = [np.full((network.get_layer(h).output.shape[-1],), 1.0, "float32") for h in hooks]
    delta = build_penalty_terms("delta", network, hooks=hooks, attention=attention)[0]
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    assert float(delta(None, images=x, training=False)) == pytest.approx(0.0, abs=1e-6)
    kernel = network.get_layer("block_02").trainable_weights[0]
    kernel.assign(kernel * 1.5)
    assert float(delta(None, images=x, training=False)) > 0.0


def test_the_main_job_is_mobilenet_v2_and_a_named_backbone_keeps_the_library_defaults():
    from app.train import MAIN_JOB, build_parser, config_from_args
    from rundir.config import TrainConfig

    main_job = config_from_args(build_parser().parse_args([]))
    assert (main_job.backbone, main_job.image_size, main_job.epochs) == (MAIN_JOB["backbone"], 96, 10)
    assert (main_job.bn, main_job.lr) == ("frozen", 0.001) and main_job.dataset is None
    assert config_from_args(build_parser().parse_args(["--epochs", "2"])).epochs == 2
    named = config_from_args(build_parser().parse_args(["--backbone", "resnet20"]))
    assert (named.image_size, named.epochs, named.lr, named.bn) == (None, TrainConfig().epochs, TrainConfig().lr, "train")
    folder = config_from_args(build_parser().parse_args(["--dataset", "folder", "--data-dir", "x"]))
    assert (folder.backbone, folder.image_size, folder.epochs) == ("mobilenet_v2", 96, TrainConfig().epochs)  # your data: ImageNet
