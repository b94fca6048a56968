"""The Visual Decathlon through TFDS: the real loading code on mock data, and the offline failure."""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from pipelines import DataError, load_dataset
from pipelines.decathlon import DECATHLON_STATS, NUM_CLASSES

SIZES = {"train": 12, "validation": 12, "test": 12}  # mock_data yields 12 per split


def _write_metadata(data_dir, name):
    """A prepared-looking TFDS folder: dataset_info.json with the split sizes (no records: mock_data makes them)."""
    builder = tfds.builder(f"visual_domain_decathlon/{name}", data_dir=str(data_dir))
    splits = [
        tfds.core.SplitInfo(
            name=split, shard_lengths=[count], num_bytes=0,
            filename_template=tfds.core.ShardedFileTemplate(
                data_dir=builder.data_path, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                dataset_name=builder.name, split=split, filetype_suffix="tfrecord"),
        )
        for split, count in SIZES.items()
    ]
    builder.info.set_splits(tfds.core.SplitDict(splits))
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)


@pytest.fixture
def mock_decathlon(tmp_path):
    """Runs the real TFDS loading code on generated examples (12 per split), for the names asked."""

    def prepare(*names):
        for name in names:
            _write_metadata(tmp_path, name)
        return tfds.testing.mock_data(
            num_examples=SIZES["train"], policy=tfds.testing.MockPolicy.USE_FILES, data_dir=str(tmp_path))

    prepare.data_dir = tmp_path
    return prepare


def test_decathlon_dtd_from_tfds(mock_decathlon):
    with mock_decathlon("dtd"):
        bundle = load_dataset("dtd", tfds_data_dir=mock_decathlon.data_dir)
        train = [batch for batch in bundle.batches("train", 5, training=True, seed=3)]
        again = [batch for batch in bundle.batches("train", 5, training=True, seed=3)]
        val_x, val_y = next(iter(bundle.batches("validation", 12, training=False)))

    assert bundle.name == "dtd" and bundle.num_classes == NUM_CLASSES["dtd"] == len(bundle.class_names)
    assert bundle.split_sizes == SIZES
    assert bundle.labelled_splits == ("train", "validation")  # test labels are hidden (-1)
    assert (bundle.mean, bundle.std) == DECATHLON_STATS["dtd"]
    assert bundle.skipped == [] and bundle.source.startswith("tfds:visual_domain_decathlon/dtd")
    assert bundle.num_batches("train", 5) == 3
    assert [x.shape[0] for x, _ in train] == [5, 5, 2]
    assert all(x.shape[1:] == (64, 64, 3) and x.dtype.name == "float32" for x, _ in train)  # random crop 64
    for (x1, y1), (x2, y2) in zip(train, again):  # same seed, same batches
        np.testing.assert_array_equal(x1.numpy(), x2.numpy())
        np.testing.assert_array_equal(y1.numpy(), y2.numpy())
    assert val_x.shape == (12, 72, 72, 3) and val_y.dtype.name == "int32"
    assert 0.0 <= float(val_x.numpy().min()) and float(val_x.numpy().max()) <= 255.0
    labels = np.concatenate([y.numpy() for _, y in train])
    assert labels.min() >= 0 and labels.max() < 47


@pytest.mark.parametrize(
    ("name", "train_shape"),
    [("daimlerpedcls", (40, 40, 3)), ("omniglot", (40, 40, 3)), ("vgg-flowers", (36, 36, 3))],
)
def test_decathlon_policies_scale_with_image_size(mock_decathlon, name, train_shape):
    with mock_decathlon(name):
        bundle = load_dataset(name, tfds_data_dir=mock_decathlon.data_dir)
        x_train, _ = next(iter(bundle.batches("train", 4, training=True, image_size=40)))
        x_eval, _ = next(iter(bundle.batches("test", 4, training=False, image_size=40)))
    assert tuple(x_train.shape[1:]) == train_shape  # round(40 * 64 / 72) = 36 for random-crop tasks
    assert tuple(x_eval.shape[1:]) == (40, 40, 3)
    mean, std = DECATHLON_STATS[name]
    assert bundle.mean == mean and bundle.std == std and len(bundle.mean) == 3


def test_missing_tfds_data_fails_fast_naming_the_three_ways(tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        load_dataset("svhn", tfds_data_dir=tmp_path)
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    assert "\n" not in message
    assert "--tfds-data-dir" in message
    assert str(tmp_path / "downloads" / "manual") in message and "decathlon-1.0-data.tar.gz" in message
    assert "--data-dir" in message
    with pytest.raises(DataError, match="decathlon-1.0-data-imagenet.tar"):
        load_dataset("imagenet12", tfds_data_dir=tmp_path)


def test_wrong_archives_in_the_manual_dir_give_a_data_error(tmp_path):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    for archive in ("decathlon-1.0-devkit.tar.gz", "decathlon-1.0-data.tar.gz"):
        (manual / archive).write_bytes(b"not the archive")
    with pytest.raises(DataError, match="wrong checksum"):
        load_dataset("svhn", tfds_data_dir=tmp_path)


def test_decathlon_name_with_data_dir_reads_folders(tmp_path):
    from tests.pipelines import images

    images.make_class_folders(tmp_path / "gtsrb" / "train", {"00000": 3, "00001": 3}, size=(30, 30))
    images.make_class_folders(tmp_path / "gtsrb" / "validation", {"00000": 1, "00001": 1}, size=(30, 30))
    bundle = load_dataset("gtsrb", data_dir=tmp_path, test_fraction=0.0)
    assert bundle.split_sizes == {"train": 6, "validation": 2}
    assert bundle.policy == "decathlon-centre-crop" and bundle.mean == DECATHLON_STATS["gtsrb"][0]
    x, _ = next(iter(bundle.batches("train", 6, training=True)))
    assert x.shape == (6, 72, 72, 3)
