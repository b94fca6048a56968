"""Weight import: PyTorch state dicts (.npz, .pth), the Keras-2 SqueezeNet file, Keras files,
the default-weight search path, and the errors for files that do not fit."""

import functools
import pathlib
import sys

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from models.backbones import build_backbone
from models.backbones import resnet26 as resnet26_module
from models.backbones import squeezenet as squeezenet_module
from models.backbones.resnet_cifar import CIFAR10_CLASS_NAMES, torch_targets
from models.classifier import assemble_classifier
from models.errors import ModelConfigError
from models.weights import read_keras2_h5, weights_search_path
from models.weights.state_dict import assign_state_dict, check_state_dict

REPO = pathlib.Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=None)
def cifar10_sample(root):
    images, labels = [], []
    for index, name in enumerate(CIFAR10_CLASS_NAMES):
        for path in sorted((pathlib.Path(root) / name).iterdir()):
            images.append(np.asarray(Image.open(path).convert("RGB"), dtype="float32"))
            labels.append(index)
    return np.stack(images), np.array(labels)


def source_accuracy(backbone, shared_dir):
    images, labels = cifar10_sample(str(shared_dir / "data" / "cifar10-sample" / "test"))
    assert images.shape == (2000, 32, 32, 3)
    model = assemble_classifier(backbone, use_source_classifier=True)
    predictions = model.predict(images, batch_size=500, verbose=0).argmax(-1)
    return float((predictions == labels).mean())


def test_resnet20_embedded_weights_classify_cifar10(shared_dir, monkeypatch):
    monkeypatch.delenv("ADAPTUNE_WEIGHTS_DIR", raising=False)
    backbone = build_backbone("resnet20")
    assert pathlib.Path(backbone.weights_source) == REPO / "assets" / "weights" / "resnet-cifar10" / "resnet20.npz"
    assert backbone.source_class_names == CIFAR10_CLASS_NAMES
    assert source_accuracy(backbone, shared_dir) >= 0.75  # measured 0.8135 (0.810 on the 10,000 JPEG test images)


@pytest.mark.slow
def test_resnet56_weights_classify_cifar10(shared_dir):
    backbone = build_backbone("resnet56", str(shared_dir / "weights" / "resnet-cifar10" / "resnet56.npz"))
    assert source_accuracy(backbone, shared_dir) >= 0.75  # measured 0.8315 (0.832 on the 10,000 JPEG test images)


def test_embedded_weights_keep_their_licence():
    folder = REPO / "assets" / "weights" / "resnet-cifar10"
    assert "Redistribution and use in source and binary forms" in (folder / "LICENSE").read_text()
    assert "akamaster/pytorch_resnet_cifar10" in (REPO / "assets" / "weights" / "README.md").read_text()


def _npz_of(tmp_path, name, arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _resnet20_arrays():
    with np.load(REPO / "assets" / "weights" / "resnet-cifar10" / "resnet20.npz") as data:
        return {k: data[k] for k in data.files}


def test_wrong_key_layout_is_a_one_line_error(tmp_path):
    arrays = {f"features.{k}": v for k, v in _resnet20_arrays().items()}
    path = _npz_of(tmp_path, "renamed.npz", arrays)
    with pytest.raises(ModelConfigError) as info:
        build_backbone("resnet20", str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("renamed.npz does not match resnet20")
    assert "unused" in message and "missing" in message and "pass the weights of resnet20" in message


def test_keras_layout_kernels_are_reported_as_wrong_shapes(tmp_path):
    arrays = _resnet20_arrays()
    arrays["layer2.0.conv1.weight"] = np.transpose(arrays["layer2.0.conv1.weight"], (2, 3, 1, 0))
    path = _npz_of(tmp_path, "keras_layout.npz", arrays)
    with pytest.raises(ModelConfigError, match=r"1 with the wrong shape \(layer2\.0\.conv1\.weight"):
        build_backbone("resnet20", str(path))


def test_weights_of_another_depth_name_file_backbone_and_blocks(shared_dir):
    path = shared_dir / "weights" / "resnet-cifar10" / "resnet56.npz"
    with pytest.raises(ModelConfigError) as info:
        build_backbone("resnet20", str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("resnet56.npz does not match resnet20: 180 of its 277 arrays unused (18 modules")
    assert message.endswith("pass the weights of resnet20")


def test_failed_check_assigns_nothing():
    backbone = build_backbone("resnet20", "none")
    backbone.source_classifier = keras.layers.Dense(10, name="classifier")
    backbone.source_classifier.build((None, 64))
    state = _resnet20_arrays()
    state.pop("linear.bias")
    before = keras.ops.convert_to_numpy(backbone.stem.conv.kernel)
    with pytest.raises(ModelConfigError, match="1 of the 97 arrays it needs missing"):
        assign_state_dict(state, torch_targets(backbone, 3), "x.npz", "resnet20")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(backbone.stem.conv.kernel), before)


def test_unsupported_suffix_names_the_readable_formats(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"0")
    with pytest.raises(ModelConfigError, match=r"weights\.bin: resnet20 reads weights from \.npz"):
        build_backbone("resnet20", str(path))


def test_pth_without_torch_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    path = tmp_path / "resnet20.pth"
    path.write_bytes(b"not read")
    with pytest.raises(ModelConfigError, match="needs PyTorch, which is not installed.*npz") as info:
        build_backbone("resnet20", str(path))
    assert "\n" not in str(info.value)


def test_pth_state_dict_imports_like_the_npz(tmp_path):
    torch = pytest.importorskip("torch")
    arrays = _resnet20_arrays()
    path = tmp_path / "resnet20.pth"
    state = {f"module.{k}": torch.from_numpy(v) for k, v in arrays.items()}
    state["module.bn1.num_batches_tracked"] = torch.tensor(5)
    torch.save({"state_dict": state, "epoch": 3}, path)
    from_pth = build_backbone("resnet20", str(path))
    from_npz = build_backbone("resnet20", "default")
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        assemble_classifier(from_pth, use_source_classifier=True)(images),
        assemble_classifier(from_npz, use_source_classifier=True)(images),
        rtol=1e-5,
        atol=1e-5,
    )


# --- ResNet-26 (SpotTune layout) --------------------------------------------------------------


def _keras_to_spottune_state(backbone, rng):
    """A random state dict in the SpotTune layout, with random BatchNorm statistics."""
    state = {}
    for key, (variable, _) in resnet26_module.torch_targets(backbone).items():
        shape = tuple(variable.shape)
        if key.endswith("conv1.weight") or key.endswith("conv2.1.weight"):
            shape = (shape[3], shape[2], shape[0], shape[1])
        elif key == "linear.weight":
            shape = shape[::-1]
        if key.endswith("running_var"):
            state[key] = rng.uniform(0.5, 2.0, shape).astype("float32")
        else:
            state[key] = (rng.normal(size=shape) * 0.1).astype("float32")
    return state


def _resnet26_with_classifier(num_classes):
    backbone = build_backbone("resnet26", "none")
    dense = keras.layers.Dense(num_classes, name="classifier")
    dense.build((None, 256))
    backbone.source_classifier = dense
    return backbone


@pytest.mark.parametrize("layout", ["spottune", "residual_adapters"])
def test_resnet26_state_dict_round_trip(layout, tmp_path):
    rng = np.random.default_rng(0)
    state = _keras_to_spottune_state(_resnet26_with_classifier(7), rng)
    if layout == "residual_adapters":
        renames = {"conv1.weight": "pre_layers_conv.conv.weight"}
        adapters = {}
        for key, value in state.items():
            new = renames.get(key, key)
            new = new.replace("bn1.", "pre_layers_conv.bns.0.", 1) if new.startswith("bn1.") else new
            if new.startswith("blocks."):
                _, s, b, rest = new.split(".", 3)
                rest = {"conv1.weight": "conv1.conv.weight", "conv2.1.weight": "conv2.1.conv.weight"}.get(rest, rest)
                rest = rest.replace("bn1.", "conv1.bns.0.").replace("bn2.", "conv2.1.bns.0.")
                new = f"layer{int(s) + 1}.{b}.{rest}"
            new = new.replace("bn2.0.", "end_bns.0.0.", 1) if new.startswith("bn2.0.") else new
            new = new.replace("linear.", "linears.0.", 1) if new.startswith("linear.") else new
            adapters[new] = value
        assert resnet26_module.to_spottune_layout(adapters) == state
        state = adapters
    else:
        state["parallel_blocks.0.0.conv1.weight"] = np.zeros((64, 32, 3, 3), "float32")  # ignored
    path = _npz_of(tmp_path, f"{layout}.npz", state)
    backbone = build_backbone("resnet26", str(path))
    assert backbone.source_classifier.units == 7
    key = "layer2.1.conv2.1.conv.weight" if layout == "residual_adapters" else "blocks.1.1.conv2.1.weight"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(backbone.blocks[5].conv2.kernel), np.transpose(state[key], (2, 3, 1, 0))
    )
    head_key = "end_bns.0.0.running_var" if layout == "residual_adapters" else "bn2.0.running_var"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(backbone.head.bn.moving_variance), state[head_key])


def test_resnet26_matches_the_authors_pytorch_network(tmp_path):
    """Same logits as the SpotTune authors' PyTorch ResNet-26 (spottune_models.py, policy=None), computed once
    with PyTorch by tests/reference/resnet26_authors.py and checked in: CI needs no torch."""
    from tests.reference import resnet26_authors as reference

    path = _npz_of(tmp_path, "spottune.npz", reference.state_dict())
    backbone = build_backbone("resnet26", str(path))
    assert backbone.source_classifier.units == reference.NUM_CLASSES
    normalization = {"mean": [0.0] * 3, "std": [1.0] * 3, "scale": 1.0}
    model = assemble_classifier(backbone, normalization=normalization, use_source_classifier=True)
    with np.load(reference.FIXTURE) as fixture:
        expected = fixture["logits"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(reference.images())), expected, rtol=1e-4, atol=1e-4)


def test_spottune_module_pickle_asks_for_a_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "imagenet12.t7"
    torch.save({"net": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(ModelConfigError, match=r"torch\.save\(net\.state_dict\(\), PATH\)"):
        build_backbone("resnet26", str(path))


# --- SqueezeNet 1.1 (Keras-2 .h5) ------------------------------------------------------------


def test_squeezenet_h5_arrays_land_in_their_layers(shared_dir):
    path = shared_dir / "weights" / "squeezenet1.1-imagenet" / "squeezenet1.1_imagenet_notop.h5"
    arrays = read_keras2_h5(path)
    assert len(arrays) == 2 + 8 * 6
    backbone = build_backbone("squeezenet1_1", str(path))
    targets = squeezenet_module.keras2_targets(backbone)
    assert check_state_dict(arrays, targets, path.name, "squeezenet1_1") is None  # every array used, shapes equal
    for key, (variable, _) in targets.items():
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), arrays[key], err_msg=key)
    with h5py.File(path, "r") as handle:  # spot check against the raw file
        raw = np.asarray(handle["fire9/expand3x3"]["fire9/expand3x3_1/kernel:0"])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(backbone.blocks[7].expand3x3.kernel), raw)
    assert backbone.blocks[2].downsample and backbone.blocks[4].downsample
    assert not any(b.downsample for i, b in enumerate(backbone.blocks) if i not in (2, 4))


def _clothing(shared_dir, split, per_class, size):
    root = shared_dir / "data" / "clothing-small" / split
    images, labels = [], []
    for index, folder in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for path in sorted(folder.iterdir())[:per_class]:
            image = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
            images.append(np.asarray(image, dtype="float32"))
            labels.append(index)
    return np.stack(images), np.array(labels)


def _standardise(train, test):
    mean, std = train.mean(0), train.std(0) + 1e-6
    return (train - mean) / std, (test - mean) / std


def nearest_class_mean_accuracy(train, train_labels, test, test_labels):
    train, test = _standardise(train, test)
    centres = np.stack([train[train_labels == k].mean(0) for k in range(train_labels.max() + 1)])
    distances = ((test[:, None, :] - centres[None]) ** 2).sum(-1)
    return float((distances.argmin(1) == test_labels).mean())


def ridge_accuracy(train, train_labels, test, test_labels, penalty=1.0):
    train, test = _standardise(train, test)
    targets = np.eye(train_labels.max() + 1)[train_labels]
    gram = train.T @ train + penalty * len(train) * np.eye(train.shape[1])
    weights = np.linalg.solve(gram, train.T @ targets)
    return float(((test @ weights).argmax(1) == test_labels).mean())


def test_squeezenet_pretrained_features_separate_real_photos(shared_dir):
    size = squeezenet_module.DEFAULT_IMAGE_SIZE
    train, train_labels = _clothing(shared_dir, "train", 30, size)
    test, test_labels = _clothing(shared_dir, "test", 30, size)
    scores = {}
    for weights in ("default", "none"):
        keras.utils.set_random_seed(0)
        backbone = build_backbone("squeezenet1_1", weights)
        model = assemble_classifier(backbone, num_classes=1)
        features = keras.Model(model.input, model.get_layer("head").output)
        f_train = features.predict(train, batch_size=64, verbose=0)
        f_test = features.predict(test, batch_size=64, verbose=0)
        scores[weights] = (
            nearest_class_mean_accuracy(f_train, train_labels, f_test, test_labels),
            ridge_accuracy(f_train, train_labels, f_test, test_labels),
        )
    # measured: pretrained 0.54 (nearest mean) / 0.65 (ridge), random 0.11 / 0.30 on 245 test photos
    assert scores["default"][0] >= scores["none"][0] + 0.2
    assert scores["default"][1] >= scores["none"][1] + 0.2
    assert scores["default"][1] >= 0.5


def test_squeezenet_rejects_a_foreign_h5(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [b"dense_1"]
        group = handle.create_group("dense_1")
        group.attrs["weight_names"] = [b"dense_1/kernel:0"]
        group.create_dataset("dense_1/kernel:0", data=np.zeros((3, 3), "float32"))
    with pytest.raises(ModelConfigError, match="other.h5 does not match squeezenet1_1: 1 of its 1 arrays unused"):
        build_backbone("squeezenet1_1", str(path))


# --- Keras files, search path, keras.applications -------------------------------------------


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_keras_file_round_trip(suffix, tmp_path):
    source = build_backbone("resnet20", "default")
    model = assemble_classifier(source, num_classes=4, dropout=0.2)
    model.get_layer("classifier").kernel.assign(np.random.default_rng(0).normal(size=(64, 4)).astype("float32"))
    path = tmp_path / f"tuned{suffix}"
    if suffix == ".keras":
        model.save(path)
    else:
        model.save_weights(path)
    loaded = build_backbone("resnet20", str(path))
    assert loaded.source_classifier.units == 4 and loaded.source_class_names is None
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(assemble_classifier(loaded, use_source_classifier=True)(images)),
        keras.ops.convert_to_numpy(model(images)),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ModelConfigError, match=f"tuned{suffix} does not match resnet32") as info:
        build_backbone("resnet32", str(path))
    assert "\n" not in str(info.value)


def test_search_path_order(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTUNE_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert weights_search_path() == [
        tmp_path,
        REPO / "assets" / "weights",
        REPO.parent / "shared" / "weights",
        tmp_path / "kh" / "models",
    ]
    # a file in $ADAPTUNE_WEIGHTS_DIR wins over the embedded one
    (tmp_path / "resnet-cifar10").mkdir()
    arrays = _resnet20_arrays()
    np.savez(tmp_path / "resnet-cifar10" / "resnet20.npz", **arrays)
    assert build_backbone("resnet20").weights_source == str(tmp_path / "resnet-cifar10" / "resnet20.npz")


def _write_keras2_h5(model, path):
    """The Keras-2 weights layout (what keras.applications downloads), written with h5py."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [layer.name.encode() for layer in model.layers]
        handle.attrs["backend"] = b"tensorflow"
        handle.attrs["keras_version"] = b"2.2.4"
        for layer in model.layers:
            group = handle.create_group(layer.name)
            names = [f"{layer.name}/{v.name}:0".encode() for v in layer.weights]
            group.attrs["weight_names"] = names
            for name, variable in zip(names, layer.weights):
                group.create_dataset(name.decode(), data=keras.ops.convert_to_numpy(variable))


def test_mobilenet_v2_default_weights_from_the_search_path(tmp_path, monkeypatch):
    keras.utils.set_random_seed(3)
    reference = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(None, None, 3))
    for variable in reference.weights:
        if "moving_variance" in variable.path:
            variable.assign(np.random.default_rng(0).uniform(0.5, 2.0, variable.shape).astype("float32"))
    _write_keras2_h5(reference, tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    monkeypatch.setenv("ADAPTUNE_WEIGHTS_DIR", str(tmp_path))
    backbone = build_backbone("mobilenet_v2")
    assert backbone.weights_source.startswith(str(tmp_path))
    images = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    pooled = keras.ops.mean(reference(images), axis=(1, 2))
    ours = images
    for layer in [backbone.stem, *backbone.blocks, backbone.head]:
        ours = layer(ours)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(pooled), rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelConfigError, match="does not match resnet50") as info:
        build_backbone("resnet50", str(tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"))
    assert "\n" not in str(info.value)
