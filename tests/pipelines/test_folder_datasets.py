"""Folder datasets: layouts, the seeded stratified split, untidy files, the real folders in ../shared."""

import collections
import pathlib

import numpy as np
import pytest

from pipelines import DataError, DataWarning, load_dataset
from tests.pipelines import images


def _all_images(bundle, split, training=False, batch_size=16, **kwargs):
    xs, ys = [], []
    for x, y in bundle.batches(split, batch_size, training=training, **kwargs):
        xs.append(x.numpy())
        ys.append(y.numpy())
    return np.concatenate(xs), np.concatenate(ys)


def test_split_folders_are_used_and_labels_follow_folders(tmp_path):
    colours = {"a": images.RED, "b": images.GREEN, "c": images.BLUE}
    images.make_class_folders(tmp_path / "train", {"a": 4, "b": 3, "c": 2}, colours, size=(50, 30))
    images.make_class_folders(tmp_path / "val", {"a": 2, "b": 2, "c": 1}, colours)
    images.make_class_folders(tmp_path / "test", {"a": 1, "b": 1, "c": 1}, colours)

    bundle = load_dataset("folder", data_dir=tmp_path)

    assert bundle.class_names == ["a", "b", "c"] and bundle.num_classes == 3
    assert bundle.split_sizes == {"train": 9, "validation": 5, "test": 3}
    assert bundle.labelled_splits == ("train", "validation", "test")
    assert bundle.skipped == []
    assert bundle.num_batches("train", 4) == 3 and bundle.num_batches("train", 4, drop_remainder=True) == 2
    for split in ("train", "val", "test"):
        for training in (False, True):
            x, y = _all_images(bundle, split, training=training, image_size=24)
            assert x.dtype == np.float32 and y.dtype == np.int32
            assert x.shape[1:] == (24, 24, 3)
            assert 0.0 <= x.min() and x.max() <= 255.0
            # Each class has its own colour: the brightest channel of an image names its class.
            np.testing.assert_array_equal(x.mean(axis=(1, 2)).argmax(axis=1), y)
    _, y = _all_images(bundle, "validation")
    np.testing.assert_array_equal(y, [0, 0, 1, 1, 2])  # evaluation keeps the file order


def test_stratified_split_is_seeded_disjoint_complete_and_keeps_every_class(tmp_path):
    made = images.make_class_folders(tmp_path, {"big": 30, "mid": 10, "tiny": 2, "one": 1})

    bundles = [load_dataset("folder", data_dir=tmp_path, seed=seed) for seed in (0, 0, 1)]
    splits = [{s: [p for p, _ in b.files(s)] for s in b.split_sizes} for b in bundles]

    assert splits[0] == splits[1]
    assert splits[0] != splits[2]
    everything = sorted(str(p) for paths in made.values() for p in paths)
    for bundle, split in zip(bundles, splits):
        assert sorted(p for paths in split.values() for p in paths) == everything
        assert sum(len(v) for v in split.values()) == len(set(p for v in split.values() for p in v))
        assert set(label for _, label in bundle.files("train")) == {0, 1, 2, 3}
        counts = collections.Counter(bundle.class_names[label] for _, label in bundle.files("validation"))
        assert counts == {"big": 3, "mid": 1}  # round(n * 0.1) per class; tiny and one stay in train
        assert bundle.split_sizes == {"train": 35, "validation": 4, "test": 4}

    no_test = load_dataset("folder", data_dir=tmp_path, val_fraction=0.2, test_fraction=0.0)
    assert no_test.split_sizes == {"train": 35, "validation": 8}


def test_missing_validation_folder_is_drawn_from_train(tmp_path):
    images.make_class_folders(tmp_path / "train", {"x": 10, "y": 10})
    images.make_class_folders(tmp_path / "test", {"x": 2, "y": 2})
    bundle = load_dataset("folder", data_dir=tmp_path, val_fraction=0.2)
    assert bundle.split_sizes == {"train": 16, "validation": 4, "test": 4}


def test_nested_folders_belong_to_the_first_level_class(tmp_path):
    for alphabet, characters in (("Greek", 3), ("Latin", 2)):
        for c in range(characters):
            for i in range(4):
                images.solid(tmp_path / alphabet / f"character{c:02d}" / f"{i}.png", mode="1")
    (tmp_path / "README.txt").write_text("not a class")
    bundle = load_dataset("folder", data_dir=tmp_path, val_fraction=0.25, test_fraction=0.0)
    assert bundle.class_names == ["Greek", "Latin"]
    assert bundle.split_sizes == {"train": 15, "validation": 5}
    x, _ = _all_images(bundle, "train", image_size=16)
    assert x.shape == (15, 16, 16, 3)


def test_untidy_files_are_converted_or_skipped_and_counted(tmp_path):
    cls = tmp_path / "train" / "mixed"
    expected = {
        "good.jpg": images.solid(cls / "good.jpg", images.RED),
        "grey.jpg": images.solid(cls / "grey.jpg", (128, 128, 128), mode="L"),
        "cmyk.jpg": images.solid(cls / "cmyk.jpg", images.BLUE, mode="CMYK", fmt="JPEG", quality=95),
        "palette.png": images.solid(cls / "palette.png", images.GREEN, mode="P"),
        "rgba.png": images.solid(cls / "rgba.png", images.RED, mode="RGBA"),
        "anim.gif": images.animated_gif(cls / "anim.gif"),  # first frame: red
        "palette.bmp": images.solid(cls / "palette.bmp", images.BLUE, mode="P"),
        "photo.webp": images.solid(cls / "photo.webp", images.GREEN, fmt="WEBP", lossless=True),
        "scan.tif": images.solid(cls / "scan.tif", images.RED),
        "deep.png": images.grey16_png(cls / "deep.png", value=257 * 200),
        "is_png.jpg": images.solid(cls / "is_png.jpg", images.BLUE, fmt="PNG"),
    }
    colour_of = {
        "good.jpg": images.RED, "grey.jpg": (128, 128, 128), "cmyk.jpg": images.BLUE, "palette.png": images.GREEN,
        "rgba.png": images.RED, "anim.gif": images.RED, "palette.bmp": images.BLUE, "photo.webp": images.GREEN,
        "scan.tif": images.RED, "deep.png": (200, 200, 200), "is_png.jpg": images.BLUE,
    }
    broken = {images.truncated_jpeg(cls / "truncated.jpg"), images.text_as_jpeg(cls / "notes.jpg")}
    (cls / ".DS_Store").write_bytes(b"\x00\x01")
    (cls / "labels.csv").write_text("a,b\n")
    images.make_class_folders(tmp_path / "train", {"plain": 3})

    with pytest.warns(DataWarning, match="2 unreadable image file"):
        bundle = load_dataset("folder", data_dir=tmp_path, val_fraction=0.0, test_fraction=0.0)

    assert {pathlib.Path(s.path) for s in bundle.skipped} == broken
    assert all(s.reason for s in bundle.skipped)
    assert bundle.split_sizes == {"train": len(expected) + 3}
    files = bundle.files("train")
    x, y = _all_images(bundle, "train", image_size=16)
    assert len(x) == len(files) == len(expected) + 3
    by_name = {pathlib.Path(path).name: image for (path, _), image in zip(files, x)}
    for name in expected:
        np.testing.assert_allclose(by_name[name].mean(axis=(0, 1)), colour_of[name], atol=6, err_msg=name)
    read_from_cache = [p for p in bundle.splits["train"].paths if not p.startswith(str(tmp_path))]
    assert len(read_from_cache) == 3  # BMP, WebP and TIFF are read from converted PNG copies
    # The whole split, with training augmentation, iterates without an error.
    xt, _ = _all_images(bundle, "train", training=True, image_size=16)
    assert xt.shape == (len(files), 16, 16, 3)


def test_errors_are_one_line_data_errors(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("folder")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("folder", data_dir=tmp_path / "nope")
    with pytest.raises(DataError, match="no images"):
        load_dataset("folder", data_dir=tmp_path)
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    assert "default" in str(info.value) and "vgg-flowers" in str(info.value) and "\n" not in str(info.value)
    images.text_as_jpeg(tmp_path / "a" / "x.jpg")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="no readable training image"):
        load_dataset("folder", data_dir=tmp_path)
    images.make_class_folders(tmp_path, {"a": 3, "b": 3})  # two classes: one class is an error of its own
    with pytest.warns(DataWarning, match="1 unreadable"):
        bundle = load_dataset("folder", data_dir=tmp_path, val_fraction=0, test_fraction=0)
    with pytest.raises(DataError, match="no split"):
        bundle.batches("test", 4, training=False)


def test_real_clothing_small(shared_dir):
    bundle = load_dataset("folder", data_dir=shared_dir / "data" / "clothing-small")
    assert bundle.num_classes == 10 and "t-shirt" in bundle.class_names
    assert bundle.split_sizes == {"train": 3068, "validation": 341, "test": 372}
    assert bundle.skipped == []
    assert all(0.3 < m < 0.7 for m in bundle.mean) and all(0.15 < s < 0.35 for s in bundle.std)
    x, y = next(iter(bundle.batches("validation", 32, training=False, cache=False)))
    assert x.shape == (32, 72, 72, 3) and x.numpy().std() > 20
    assert 0 <= y.numpy().min() and y.numpy().max() < 10


def test_real_omniglot_small_nested(shared_dir):
    root = shared_dir / "data" / "omniglot-small" / "images_background_small1"
    bundle = load_dataset("folder", data_dir=root)
    assert bundle.class_names == ["Balinese", "Early_Aramaic", "Greek", "Korean", "Latin"]
    assert sum(bundle.split_sizes.values()) == 2720
    assert bundle.mean[0] > 0.8  # white paper, black strokes
    assert bundle.mean[0] == pytest.approx(bundle.mean[2], abs=1e-6)  # 1-bit images, grey in RGB
    x, _ = next(iter(bundle.batches("train", 8, training=True, image_size=32, cache=False)))
    assert x.shape == (8, 32, 32, 3)
    np.testing.assert_allclose(x[..., 0], x[..., 1])


def test_a_file_broken_after_loading_is_dropped_and_the_epoch_keeps_its_size(tmp_path):
    made = images.make_class_folders(tmp_path, {"a": 5, "b": 5})
    bundle = load_dataset("folder", data_dir=tmp_path, val_fraction=0, test_fraction=0)
    made["a"][2].write_bytes(b"broken since the scan")
    for training in (False, True):
        for cache in (False, True):
            ds = bundle.batches("train", 4, training=training, image_size=16, cache=cache)
            assert int(ds.cardinality()) == bundle.num_batches("train", 4) == 3
            x, y = _all_images(bundle, "train", training=training, batch_size=4, image_size=16, cache=cache)
            assert x.shape == (10, 16, 16, 3) and len(y) == 10
