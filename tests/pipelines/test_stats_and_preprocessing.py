"""Channel statistics (computed, cached, plausible) and the preprocessing policies."""

import json

import numpy as np
import pytest
import tensorflow as tf

from pipelines import load_dataset, scan
from pipelines.preprocessing import Preprocessing
from tests.pipelines import images


def test_stats_are_exact_on_solid_images_and_cached(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    # train: 2 red (255, 0, 0) and 2 blue (0, 0, 255) images -> mean (0.5, 0, 0.5), std (0.5, 0, 0.5)
    images.make_class_folders(data / "train", {"r": 2, "b": 2}, {"r": (255, 0, 0), "b": (0, 0, 255)})
    images.make_class_folders(data / "validation", {"r": 1, "b": 1}, {"r": (0, 255, 0), "b": (0, 255, 0)})

    first = load_dataset("folder", data_dir=data, cache_dir=cache)
    np.testing.assert_allclose(first.mean, (0.5, 0.0, 0.5), atol=1e-6)  # validation (green) not counted
    np.testing.assert_allclose(first.std, (0.5, 0.0, 0.5), atol=1e-3)
    cache_files = list((cache / "stats").glob("*.json"))
    assert len(cache_files) == 1
    stored = json.loads(cache_files[0].read_text())
    assert len(stored["files"]) == 6 and stored["version"] == scan.SCAN_VERSION

    def no_decoding(*args, **kwargs):
        raise AssertionError("the second load must read the cache, not decode")

    monkeypatch.setattr(scan, "inspect_file", no_decoding)
    second = load_dataset("folder", data_dir=data, cache_dir=cache)
    assert (second.mean, second.std) == (first.mean, first.std)

    # A changed folder is scanned again (a new cache entry).
    monkeypatch.undo()
    images.solid(data / "train" / "r" / "extra.png", (255, 0, 0))
    third = load_dataset("folder", data_dir=data, cache_dir=cache)
    assert third.split_sizes["train"] == 5 and third.mean[0] > 0.5
    assert len(list((cache / "stats").glob("*.json"))) == 2


def test_stats_of_the_embedded_default_are_plausible():
    bundle = load_dataset(None)
    assert bundle.name == "clothing-mini" and bundle.num_classes == 10
    assert all(0.3 < m < 0.7 for m in bundle.mean) and all(0.15 < s < 0.35 for s in bundle.std)


def _stripes(height, width):
    """Left half red, right half blue."""
    array = np.zeros((height, width, 3), np.uint8)
    array[:, : width // 2, 0] = 255
    array[:, width // 2:, 2] = 255
    return tf.constant(array)


@pytest.mark.parametrize("policy", ["folder", "decathlon-random-crop", "decathlon-centre-crop", "decathlon-resize"])
@pytest.mark.parametrize("shape", [(100, 200), (30, 20), (72, 72)])
def test_policy_output_shapes(policy, shape):
    prep = Preprocessing(policy, 32)
    image = _stripes(*shape)
    cached = prep.deterministic(image, training=True)
    train = prep.augment(cached, tf.constant([1, 2], tf.int64)) if prep.is_random(True) else prep.finish(cached, True)
    evaluation = prep.finish(prep.deterministic(image, training=False), training=False)
    expected_train = (28, 28, 3) if policy == "decathlon-random-crop" else (32, 32, 3)
    assert tuple(train.shape) == expected_train and train.dtype == tf.float32
    assert tuple(evaluation.shape) == (32, 32, 3)
    assert tuple(cached.shape[:2]) == prep.cached_shape(shape[0], shape[1], training=True)


def test_evaluation_is_the_centre_crop_and_training_is_seeded():
    prep = Preprocessing("folder", 36)
    evaluation = prep.finish(prep.deterministic(_stripes(100, 200), training=False), training=False).numpy()
    # shorter side 36 -> 36 x 72, centre crop columns 18..54: red on the left half, blue on the right.
    assert evaluation[:, :16, 0].min() > 250 and evaluation[:, 20:, 2].min() > 250

    cached = prep.deterministic(_stripes(100, 200), training=True)
    a = prep.augment(cached, tf.constant([1, 2], tf.int64)).numpy()
    b = prep.augment(cached, tf.constant([1, 2], tf.int64)).numpy()
    outputs = [prep.augment(cached, tf.constant([s, 0], tf.int64)).numpy() for s in range(8)]
    np.testing.assert_array_equal(a, b)
    assert len({o.tobytes() for o in outputs}) > 1
    flipped = [o for o in outputs if o[:, 0, 2].mean() > o[:, -1, 2].mean()]
    assert 0 < len(flipped) < len(outputs)  # some crops are flipped (blue on the left), not all


def test_training_batches_are_reproducible_and_reshuffled_per_epoch(tmp_path):
    images.make_class_folders(tmp_path, {"a": 8, "b": 8})
    bundle = load_dataset("folder", data_dir=tmp_path, val_fraction=0, test_fraction=0)
    ds = bundle.batches("train", 16, training=True, image_size=16, seed=5)
    epoch1 = [y.numpy().tolist() for _, y in ds]
    epoch2 = [y.numpy().tolist() for _, y in ds]
    again = [y.numpy().tolist() for _, y in bundle.batches("train", 16, training=True, image_size=16, seed=5)]
    assert epoch1 == again and epoch1 != epoch2
    assert sorted(epoch1[0]) == [0] * 8 + [1] * 8
    evaluation = [y.numpy().tolist() for _, y in bundle.batches("train", 16, training=False, image_size=16)]
    assert evaluation == [[0] * 8 + [1] * 8]
