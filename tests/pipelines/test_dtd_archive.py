"""DTD from its archive layout (images/<class>/*.jpg with labels/{train,val,test}<k>.txt)."""

import numpy as np
import pytest

from pipelines import DataError, load_dataset
from pipelines.decathlon import DECATHLON_STATS
from tests.pipelines import images

CLASSES = ("banded", "dotted", "zigzagged")


def _make_dtd(root, per_class=6, splits=2):
    """An unpacked dtd-r1.0.1 archive in miniature: dtd/images/<class>/<class>_000k.jpg and label files."""
    dtd = root / "dtd"
    names = {}
    for index, name in enumerate(CLASSES):
        names[name] = [f"{name}/{name}_{i:04d}.jpg" for i in range(per_class)]
        for i, rel in enumerate(names[name]):
            images.noise(dtd / "images" / rel, seed=100 * index + i, size=(90 + 10 * i, 80))
    (dtd / "labels").mkdir()
    for k in range(1, splits + 1):
        for stem, part in (("train", slice(0, 2)), ("val", slice(2, 4)), ("test", slice(4, 6))):
            lines = []
            for name in CLASSES:
                files = names[name][k - 1:] + names[name][:k - 1]  # each official split is a different partition
                lines.extend(files[part])
            (dtd / "labels" / f"{stem}{k}.txt").write_text("\n".join(lines) + "\n")
    return dtd


def test_dtd_archive_uses_the_official_split_files(tmp_path):
    dtd = _make_dtd(tmp_path)
    bundle = load_dataset("dtd", data_dir=tmp_path)

    assert bundle.class_names == list(CLASSES) and bundle.num_classes == 3
    assert bundle.split_sizes == {"train": 6, "validation": 6, "test": 6}
    assert bundle.labelled_splits == ("train", "validation", "test")
    train = [(p.split("/images/")[1], label) for p, label in bundle.files("train")]
    listed = (dtd / "labels" / "train1.txt").read_text().split()
    assert sorted(rel for rel, _ in train) == sorted(listed)
    assert all(CLASSES[label] == rel.split("/")[0] for rel, label in train)
    # A Decathlon name keeps the Decathlon preprocessing and statistics, whatever the source.
    assert bundle.policy == "decathlon-random-crop"
    assert (bundle.mean, bundle.std) == DECATHLON_STATS["dtd"]
    x, y = next(iter(bundle.batches("train", 6, training=True)))
    assert x.shape == (6, 64, 64, 3) and x.dtype == np.float32
    x, y = next(iter(bundle.batches("validation", 6, training=False)))
    assert x.shape == (6, 72, 72, 3) and set(y.numpy()) == {0, 1, 2}

    second = load_dataset("dtd", data_dir=dtd, dtd_split=2)  # the dtd/ folder itself works too
    assert sorted(p for p, _ in second.files("train")) != sorted(p for p, _ in bundle.files("train"))
    with pytest.raises(DataError, match="split 7"):
        load_dataset("dtd", data_dir=tmp_path, dtd_split=7)


def test_dtd_listed_file_missing_is_skipped(tmp_path):
    dtd = _make_dtd(tmp_path, splits=1)
    (dtd / "images" / "banded" / "banded_0000.jpg").unlink()
    with pytest.warns(UserWarning, match="1 unreadable"):
        bundle = load_dataset("dtd", data_dir=tmp_path)
    assert [s.reason for s in bundle.skipped] == ["file not found"]
    assert bundle.split_sizes["train"] == 5


def test_dtd_without_label_files_is_a_folder_dataset(tmp_path):
    images.make_class_folders(tmp_path / "images", {"banded": 10, "dotted": 10})
    bundle = load_dataset("dtd", data_dir=tmp_path)
    assert bundle.class_names == ["banded", "dotted"]
    assert bundle.split_sizes == {"train": 16, "validation": 2, "test": 2}
