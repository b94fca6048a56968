"""The embedded default dataset (assets/datasets/clothing-mini) and the script that makes it."""

import hashlib
import pathlib

import numpy as np
import pytest
from PIL import Image

from pipelines import load_dataset
from pipelines.loader import embedded_dataset_dir
from pipelines.make_embedded import make_embedded
from tests.pipelines import images


def test_embedded_default_loads_with_ten_classes():
    bundle = load_dataset()
    assert load_dataset("default").split_sizes == bundle.split_sizes
    assert bundle.num_classes == 10 and len(bundle.class_names) == 10
    assert bundle.split_sizes == {"train": 1435, "validation": 282, "test": 293}
    assert bundle.skipped == []
    x, y = next(iter(bundle.batches("train", 32, training=True, cache=False)))
    assert x.shape == (32, 72, 72, 3) and y.numpy().max() < 10


def test_embedded_files_are_small_licensed_and_within_limits():
    root = embedded_dataset_dir()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5.5e6
    assert (root / "LICENSE").read_text().startswith("Creative Commons Legal Code")
    assert "alexeygrigorev/clothing-dataset-small" in (root / "README.md").read_text()
    for split, limit in (("train", 150), ("validation", 40), ("test", 40)):
        for class_dir in (root / split).iterdir():
            assert 0 < len(list(class_dir.glob("*.jpg"))) <= limit, class_dir
    sample = next((root / "train" / "dress").glob("*.jpg"))
    assert Image.open(sample).size == (64, 64)


def _digest(folder):
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(folder).rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_make_embedded_is_deterministic(tmp_path):
    source = tmp_path / "source"
    for split, count in (("train", 6), ("validation", 3), ("test", 2)):
        for c, name in enumerate(("hat", "shoes")):
            for i in range(count):
                images.noise(source / split / name / f"{name}{i}.jpg", seed=100 * c + i, size=(90, 60))
    (source / "LICENSE").write_text("CC0\n")
    limits = {"train": 4, "validation": 2, "test": 2}

    counts = make_embedded(source, tmp_path / "a", limits=limits)
    make_embedded(source, tmp_path / "b", limits=limits)

    assert counts == {"train": {"hat": 4, "shoes": 4}, "validation": {"hat": 2, "shoes": 2},
                      "test": {"hat": 2, "shoes": 2}}
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    out = next((tmp_path / "a" / "train" / "hat").glob("*.jpg"))
    assert Image.open(out).size == (64, 64) and Image.open(out).mode == "RGB"
    assert (tmp_path / "a" / "LICENSE").read_text() == "CC0\n"
    with pytest.raises(SystemExit, match="--overwrite"):
        make_embedded(source, tmp_path / "a", limits=limits)
    make_embedded(source, tmp_path / "a", limits=limits, overwrite=True)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert np.asarray(Image.open(out)).std() > 10
