"""Backbones: registry, shapes, block structure, custom layers (save/load, clone), fast failures."""

import time

import keras
import numpy as np
import pytest

from models.backbones import BACKBONES, build_backbone
from models.backbones.base import HEAD_NAME, STEM_NAME, block_name, clone_layer
from models.backbones.basic_block import BasicBlock
from models.backbones.conv_stem import ConvStem
from models.backbones.fire_module import FireModule
from models.backbones.pooling_head import PoolingHead
from models.errors import ModelConfigError

# name -> (weights used here, blocks, feature_dim, default image size)
EXPECTED = {
    "resnet20": ("default", 9, 64, 32),
    "resnet32": ("none", 15, 64, 32),
    "resnet44": ("none", 21, 64, 32),
    "resnet56": ("none", 27, 64, 32),
    "resnet26": ("none", 12, 256, 72),
    "squeezenet1_1": ("default", 8, 512, 128),
    "resnet50": ("none", 16, 2048, 224),
    "mobilenet_v2": ("none", 17, 1280, 224),
    "mobilenet": ("none", 13, 1024, 224),
}


def run_parts(backbone, images, training=False):
    x = backbone.stem(images, training=training)
    for block in backbone.blocks:
        x = block(x, training=training)
    return backbone.head(x, training=training)


def test_registry_lists_every_backbone():
    from models.backbones import KERAS_APPLICATIONS

    # The other widths of the MobileNets (mobilenet_v2_0.35, mobilenet_0.75, ...) are built like the
    # alpha 1.0 ones tested here; tests/models/test_imagenet_backbones.py builds two of them.
    assert set(BACKBONES) == set(EXPECTED) | set(KERAS_APPLICATIONS)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_backbone_builds_and_runs_on_any_size(name):
    weights, num_blocks, feature_dim, image_size = EXPECTED[name]
    backbone = build_backbone(name, weights)
    assert backbone.name == name
    assert backbone.num_blocks == num_blocks
    assert backbone.feature_dim == feature_dim
    assert backbone.default_image_size == image_size
    assert sorted(i for stage in backbone.stages for i in stage) == list(range(num_blocks))
    assert backbone.stem.name == STEM_NAME and backbone.head.name == HEAD_NAME
    assert [b.name for b in backbone.blocks] == [block_name(i) for i in range(num_blocks)]
    rng = np.random.default_rng(0)
    for size in (32, 45):  # dynamic spatial input, even and odd
        images = rng.normal(size=(2, size, size + 3, 3)).astype("float32")
        features = keras.ops.convert_to_numpy(run_parts(backbone, images))
        assert features.shape == (2, feature_dim)
        assert np.all(np.isfinite(features))


def test_resnet26_resolution_per_stage():
    backbone = build_backbone("resnet26", "none")
    shape = backbone.stem.compute_output_shape((None, 72, 72, 3))
    assert shape == (None, 72, 72, 32)
    sizes = []
    for block in backbone.blocks:
        shape = block.compute_output_shape(shape)
        sizes.append(shape[1:])
    assert sizes[0] == (36, 36, 64) and sizes[4] == (18, 18, 128) and sizes[11] == (9, 9, 256)
    x = keras.ops.convert_to_numpy(backbone.blocks[0](np.zeros((1, 72, 72, 32), "float32")))
    assert x.shape == (1, 36, 36, 64)


def test_resnet26_conv_init_is_normal_fan_out():
    keras.utils.set_random_seed(1)
    backbone = build_backbone("resnet26", "none")
    kernel = keras.ops.convert_to_numpy(backbone.blocks[11].conv2.kernel)  # 3x3, 256 -> 256
    expected = np.sqrt(2.0 / (3 * 3 * 256))
    assert abs(kernel.mean()) < 0.1 * expected
    assert kernel.std() == pytest.approx(expected, rel=0.05)
    gamma = keras.ops.convert_to_numpy(backbone.blocks[0].bn1.gamma)
    assert np.all(gamma == 1.0)


def _zero_residual(block):
    """Make the residual branch output zero, so the block computes relu(shortcut(x))."""
    block.bn2.gamma.assign(np.zeros(block.filters, "float32"))
    block.bn2.beta.assign(np.zeros(block.filters, "float32"))


def test_basic_block_option_a_shortcut():
    block = BasicBlock(8, strides=2, shortcut="option_a")
    block.build((None, None, None, 4))
    _zero_residual(block)
    x = np.abs(np.random.default_rng(0).normal(size=(1, 6, 5, 4))).astype("float32")
    y = keras.ops.convert_to_numpy(block(x))
    expected = np.pad(x[:, ::2, ::2, :], [(0, 0), (0, 0), (0, 0), (2, 2)])
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_basic_block_avg_pool_shortcut():
    block = BasicBlock(8, strides=2, shortcut="avg_pool")
    block.build((None, None, None, 4))
    _zero_residual(block)
    x = np.abs(np.random.default_rng(0).normal(size=(1, 6, 4, 4))).astype("float32")
    y = keras.ops.convert_to_numpy(block(x))
    pooled = x.reshape(1, 3, 2, 2, 2, 4).mean(axis=(2, 4))
    expected = np.concatenate([pooled, np.zeros_like(pooled)], axis=-1)
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_strided_conv_pads_like_pytorch():
    """A stride-2 3x3 convolution pads one pixel on each side (TF 'same' pads only after)."""
    block = BasicBlock(1, strides=2)
    block.build((None, None, None, 1))
    kernel = np.zeros((3, 3, 1, 1), "float32")
    kernel[0, 0] = 1.0  # picks the top-left neighbour
    block.conv1.kernel.assign(kernel)
    x = np.arange(16, dtype="float32").reshape(1, 4, 4, 1) + 1
    out = keras.ops.convert_to_numpy(block.conv1(keras.ops.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])))
    # PyTorch (padding=1): output (i, j) sees input (2i-1, 2j-1), zero outside.
    np.testing.assert_allclose(out[0, :, :, 0], [[0, 0], [0, 6]])


LAYERS = {
    "conv_stem": (lambda: ConvStem(8, activation="relu", bn_epsilon=1e-5), (2, 9, 9, 3)),
    "conv_stem_pool": (
        lambda: ConvStem(8, strides=2, padding="valid", use_bias=True, batch_norm=False, activation="relu", pool_size=3),
        (2, 21, 21, 3),
    ),
    "conv_stem_torch": (lambda: ConvStem(8, strides=2, padding="torch"), (2, 8, 8, 3)),
    "basic_block_a": (lambda: BasicBlock(8, strides=2, shortcut="option_a"), (2, 8, 8, 4)),
    "basic_block_avg": (
        lambda: BasicBlock(
            8,
            strides=2,
            shortcut="avg_pool",
            kernel_initializer=keras.initializers.VarianceScaling(2.0, "fan_out", "untruncated_normal"),
        ),
        (2, 8, 8, 4),
    ),
    "basic_block_identity": (lambda: BasicBlock(4), (2, 5, 5, 4)),
    "fire": (lambda: FireModule(4, 8), (2, 7, 7, 6)),
    "fire_downsample": (lambda: FireModule(4, 8, downsample=True), (2, 9, 9, 6)),
    "head": (lambda: PoolingHead(batch_norm=True, activation="relu"), (2, 3, 3, 6)),
}


def _randomise_bn(layer, rng):
    for variable in layer.weights:
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype("float32"))
        elif "moving_mean" in variable.path or "beta" in variable.path:
            variable.assign(rng.normal(size=variable.shape).astype("float32"))


@pytest.mark.parametrize("key", sorted(LAYERS))
def test_custom_layer_symbolic_fit_save_load_clone(key, tmp_path):
    make, shape = LAYERS[key]
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")

    layer = make()
    inputs = keras.Input(shape=(None, None, shape[-1]))
    outputs = layer(inputs)
    assert outputs.shape[-1] == layer.compute_output_shape(shape)[-1]
    pooled = outputs if len(outputs.shape) == 2 else keras.layers.GlobalAveragePooling2D()(outputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(pooled))
    eager = keras.ops.convert_to_numpy(layer(x))
    assert eager.shape == tuple(layer.compute_output_shape(shape))

    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, np.array([0, 1]), epochs=1, verbose=0)
    _randomise_bn(layer, rng)

    path = tmp_path / f"{key}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(loaded(x)), rtol=1e-5, atol=1e-6
    )
    assert type(loaded.layers[1]) is type(layer)

    clone = clone_layer(layer, name=f"{key}_copy")
    assert clone.name == f"{key}_copy"
    before = keras.ops.convert_to_numpy(layer(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), before, rtol=1e-6, atol=1e-6)
    if clone.trainable_weights:
        clone.trainable_weights[0].assign(clone.trainable_weights[0] + 1.0)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), before)
        assert not np.allclose(keras.ops.convert_to_numpy(clone(x)), before)


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2"])
def test_clone_block_is_independent(name):
    backbone = build_backbone(name, EXPECTED[name][0])
    block = backbone.blocks[2]
    channels = block.input.shape[-1] if isinstance(block, keras.Model) else 16
    x = np.random.default_rng(0).normal(size=(2, 12, 12, channels)).astype("float32")
    clone = clone_layer(block, name="copy_of_block")
    assert clone.name == "copy_of_block"
    before = keras.ops.convert_to_numpy(block(x))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), before, rtol=1e-5, atol=1e-5)
    assert {id(v) for v in clone.weights}.isdisjoint({id(v) for v in block.weights})
    clone.trainable_weights[0].assign(clone.trainable_weights[0] * 0.0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(block(x)), before)


def test_unknown_backbone_is_a_one_line_error():
    with pytest.raises(ModelConfigError, match="unknown backbone 'resnet9'.*resnet20") as info:
        build_backbone("resnet9")
    assert "\n" not in str(info.value)


def test_resnet26_default_weights_say_how_to_pass_them():
    with pytest.raises(ModelConfigError) as info:
        build_backbone("resnet26", "default")
    message = str(info.value)
    assert "\n" not in message
    assert "--weights PATH" in message and "--weights none" in message and ".pth" in message


@pytest.mark.parametrize(
    "name, filename",
    [
        ("resnet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("mobilenet_v2_0.35", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"),
        ("mobilenet_0.25", "mobilenet_2_5_224_tf_no_top.h5"),
    ],
)
def test_keras_application_default_weights_fail_fast_offline(name, filename, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("ADAPTUNE_WEIGHTS_DIR", str(tmp_path / "empty"))
    start = time.monotonic()
    with pytest.raises(ModelConfigError) as info:
        build_backbone(name, "default")
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert "\n" not in message
    assert filename in message and str(tmp_path / "keras_home" / "models") in message
    assert "--weights none" in message and "offline" in message


def test_missing_weights_path_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelConfigError, match="not found") as info:
        build_backbone("resnet20", str(tmp_path / "nope.npz"))
    assert "\n" not in str(info.value)
