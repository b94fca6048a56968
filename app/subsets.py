"""Subsets of a loaded dataset for the regularisation tools, without touching `pipelines/`.

- `apply_train_fraction(config, bundle)`: keep a seeded, stratified share of the training images
  (`config.extra["train_fraction"]`, e.g. 0.1), for the small-data comparisons of the SP paper.
- `carve_validation(bundle, fraction, seed)`: split the training images into a smaller training
  split and a held-out validation split, and drop every other split (the hyper-parameter search
  never sees the test images).

Folder datasets are split per class (stratified); TFDS splits are sliced (`train[:80%]`), which
is seeded by the TFDS file order rather than stratified.
"""

import dataclasses

import numpy as np

from models.errors import ModelConfigError
from pipelines.bundle import FileSplit, TFDSSplit


def stratified_indices(labels, fraction, seed):
    """Indices (sorted) of a seeded share `fraction` of each class, at least one image per class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(int(seed))
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = min(len(members), max(1, int(round(fraction * len(members)))))
        chosen.append(rng.permutation(members)[:count])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros((0,), np.int64)


def _take(split, indices):
    return FileSplit(
        sources=[split.sources[i] for i in indices],
        paths=[split.paths[i] for i in indices],
        labels=[split.labels[i] for i in indices],
        sizes=[split.sizes[i] for i in indices],
    )


def _slice(split, spec):
    count = int(split.builder.info.splits[spec].num_examples)
    return TFDSSplit(split.builder, spec, count)


def split_train(bundle, fraction, seed):
    """(kept, rest): a stratified share `fraction` of the training split, and the other images."""
    source = bundle.splits.get("train")
    if isinstance(source, FileSplit):
        kept = stratified_indices(source.labels, fraction, seed)
        rest = np.setdiff1d(np.arange(len(source)), kept)
        return _take(source, kept), _take(source, rest)
    if isinstance(source, TFDSSplit):
        percent = int(round(100 * fraction))
        return _slice(source, f"{source.split}[:{percent}%]"), _slice(source, f"{source.split}[{percent}%:]")
    raise ModelConfigError(f"dataset {bundle.name!r} has no training split to take a subset of")


def _with_splits(bundle, splits, labelled):
    return dataclasses.replace(
        bundle,
        splits=splits,
        split_sizes={name: len(split) for name, split in splits.items()},
        labelled_splits=tuple(s for s in labelled if s in splits),
    )


def apply_train_fraction(config, bundle):
    """`bundle` with only `config.extra["train_fraction"]` of its training images (unchanged when absent or 1).

    The subset is stratified by class and seeded by `config.seed`; the other splits and the channel
    statistics (computed on the full training split) are kept.
    """
    fraction = config.extra.get("train_fraction")
    if fraction is None or float(fraction) >= 1.0:
        return bundle
    fraction = float(fraction)
    if not 0.0 < fraction < 1.0:
        raise ModelConfigError(f"--train-fraction must be in (0, 1], got {fraction}")
    kept, _ = split_train(bundle, fraction, config.seed)
    splits = dict(bundle.splits)
    splits["train"] = kept
    return _with_splits(bundle, splits, bundle.labelled_splits)


def carve_validation(bundle, fraction=0.2, seed=0):
    """A bundle with splits "train" (1 - fraction of the training images) and "validation" (the rest).

    The dataset's own validation and test splits are dropped: a search tuned on them would
    report optimistic test figures.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise ModelConfigError(f"--val-fraction must be in (0, 1), got {fraction}")
    held, kept = split_train(bundle, float(fraction), seed)
    if len(kept) == 0 or len(held) == 0:
        raise ModelConfigError(f"{bundle.name}: too few training images to hold out {fraction:.0%} for validation")
    return _with_splits(bundle, {"train": kept, "validation": held}, ("train", "validation"))
