"""The run directory's own sample of its data (sample.npz): verification and calibration images as
uint8 arrays, so that `evaluate` and `export` work on a run whose data is no longer where config.json
says (a run copied to another machine, a data folder moved or deleted).

    verification images   the verification set of `verification_set`: the whole validation split,
                          topped up from the test split to `VERIFICATION_IMAGES` where it has them
                          (capped by `MAX_SAMPLE_BYTES`), evaluation preprocessing at the run's size
    calibration images    `CALIBRATION_IMAGES` training images (evaluation preprocessing, seeded
                          shuffle): what int8 export calibrates on

The arrays are exactly what the data pipeline gives (the evaluation pipeline's pixels are integers),
so verification and calibration on the sample match those on the data itself, image for image.
"""

import os

import numpy as np

from rundir import layout as rd

SAMPLE_FILE = rd.SAMPLE_FILE
VERIFICATION_IMAGES = 500  # at least this many verification images, where the data has them
CALIBRATION_IMAGES = 320  # int8 calibration: 10 batches of 32 (export's default --calibration-batches)
MAX_SAMPLE_BYTES = 48 << 20  # uint8 pixels kept at most (fewer images at large image sizes)
SPLIT_ORDER = ("validation", "test", "train")


def to_uint8(images):
    """float RGB [0, 255] -> uint8 (rounded, clipped): what a device feeds an exported model."""
    return np.clip(np.rint(np.asarray(images, np.float32)), 0, 255).astype(np.uint8)


def _labelled(bundle):
    labelled = list(getattr(bundle, "labelled_splits", bundle.split_sizes))
    return [split for split in SPLIT_ORDER if split in labelled and bundle.split_sizes.get(split)]


def _images(bundle, split, image_size, count, seed, shuffle):
    """(uint8 [n, S, S, 3], int64 [n]): the first `count` images of `split` in evaluation preprocessing."""
    data = bundle.batches(split, 64, training=False, image_size=image_size, seed=seed, shuffle=shuffle)
    images, labels, taken = [], [], 0
    for batch_images, batch_labels in data:
        images.append(to_uint8(np.asarray(batch_images)))
        labels.append(np.asarray(batch_labels).astype(np.int64))
        taken += len(labels[-1])
        if taken >= count:
            break
    if not images:
        return np.zeros((0, image_size, image_size, 3), np.uint8), np.zeros((0,), np.int64)
    return np.concatenate(images)[:count], np.concatenate(labels)[:count]


def verification_set(bundle, image_size, max_images=None, minimum=VERIFICATION_IMAGES, seed=0):
    """(uint8 images [N, S, S, 3], int64 labels [N], split name per image [N]): what a model is verified on.

    The whole validation split (else test, else train); when it has fewer than `minimum` images,
    images of the test split are added up to `minimum` (where it has them). `max_images` caps the
    total; a capped split is a seeded shuffle of it (so a cap is not one class of an ordered split).
    """
    splits = _labelled(bundle)
    if not splits:
        raise ValueError(f"dataset {bundle.name} has no labelled split to verify on")
    chosen = [splits[0]] + (["test"] if splits[0] == "validation" and "test" in splits else [])
    limit = int(max_images) if max_images else None
    parts, total = [], 0
    for i, split in enumerate(chosen):
        size = bundle.split_sizes[split]
        want = size if i == 0 else max(0, int(minimum) - total)
        if limit is not None:
            want = min(want, limit - total)
        if want <= 0:
            break
        images, labels = _images(bundle, split, image_size, want, seed, shuffle=want < size)
        parts.append((images, labels, np.asarray([split] * len(labels))))
        total += len(labels)
    if not total:
        raise ValueError(f"split {chosen[0]} of {bundle.name} gave no images")
    return tuple(np.concatenate(column) for column in zip(*parts))


def describe_splits(splits):
    """"validation" or "validation+test": the splits an image set was drawn from, in order."""
    return "+".join(dict.fromkeys(str(s) for s in splits))


def calibration_set(bundle, image_size, count=CALIBRATION_IMAGES, seed=0):
    """uint8 images [N, S, S, 3] of the training split (evaluation preprocessing, seeded shuffle), N <= count."""
    split = "train" if bundle.split_sizes.get("train") else _labelled(bundle)[0]
    images, _ = _images(bundle, split, image_size, int(count), seed, shuffle=True)
    return images


def write_sample(run_dir, bundle, image_size, seed=0, max_bytes=MAX_SAMPLE_BYTES):
    """Write <run>/sample.npz whole (`rundir.layout.replacing`): up to `VERIFICATION_IMAGES` verification and
    `CALIBRATION_IMAGES` calibration images, both scaled down so that their pixels take at most `max_bytes`.
    Returns its path."""
    budget = max(2, int(max_bytes) // (int(image_size) ** 2 * 3))
    scale = min(1.0, budget / (VERIFICATION_IMAGES + CALIBRATION_IMAGES))
    verification = max(1, int(VERIFICATION_IMAGES * scale))
    images, labels, splits = verification_set(bundle, image_size, max_images=verification, minimum=verification, seed=seed)
    calibration = calibration_set(bundle, image_size, max(1, int(CALIBRATION_IMAGES * scale)), seed=seed)
    file = rd.path(run_dir, SAMPLE_FILE)
    with rd.replacing(file) as tmp:
        np.savez_compressed(
            tmp,
            verification_images=images,
            verification_labels=labels,
            verification_splits=splits.astype(str),
            calibration_images=calibration,
            image_size=np.int64(image_size),
            class_names=np.asarray(list(bundle.class_names), dtype=str),
        )
    return file


def read_sample(run_dir):
    """The arrays of <run>/sample.npz as a dict, or None when the run keeps no sample."""
    file = rd.path(run_dir, SAMPLE_FILE)
    if not os.path.isfile(file):
        return None
    try:
        with np.load(file, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError) as error:
        raise rd.RunDirError(f"{file} is truncated or corrupt ({error}); pass --data-dir with the run's data") from None
