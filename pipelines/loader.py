"""`load_dataset`: a dataset name (and where its data lies) -> `DatasetBundle`."""

import logging
import os
import pathlib
import warnings

from pipelines import decathlon, folders, scan
from pipelines.bundle import DatasetBundle, FileSplit, SkippedFile, TFDSSplit
from pipelines.errors import DataError, DataWarning

logger = logging.getLogger(__name__)

DEFAULT_NAME = "clothing-mini"
DATASET_NAMES = ("default", "folder", *decathlon.DECATHLON_NAMES)


def embedded_dataset_dir():
    """The embedded default dataset shipped in the repository (assets/datasets/clothing-mini)."""
    return pathlib.Path(__file__).resolve().parent.parent / "assets" / "datasets" / DEFAULT_NAME


def load_dataset(name=None, data_dir=None, tfds_data_dir=None, seed=0, val_fraction=0.1, test_fraction=0.1,
                 dtd_split=1, cache_dir=None):
    """Loads a dataset by name; nothing is downloaded.

    Args:
        name: None or "default" (the embedded clothing-mini set, 10 classes of 64 x 64 photographs;
            `data_dir` is ignored), "folder" (images in class sub-folders under `data_dir`), or a Visual
            Decathlon task (aircraft, cifar100, daimlerpedcls, dtd, gtsrb, imagenet12, omniglot, svhn, ucf101,
            vgg-flowers): from TFDS (`visual_domain_decathlon/<name>` prepared under `tfds_data_dir`) or,
            when `data_dir` is given, from image folders there (for "dtd", also the DTD archive layout with
            its official splits). Decathlon names always get the Decathlon preprocessing and statistics.
        data_dir: the image folder (see `pipelines.folders` for the layouts understood).
        tfds_data_dir: the TFDS data dir (default `$TFDS_DATA_DIR` or ~/tensorflow_datasets).
        seed: seeds the stratified split of folders without split sub-folders.
        val_fraction, test_fraction: the share of each class drawn for validation and test when the data
            does not come with those splits.
        dtd_split: which of the ten official DTD splits (labels/train<k>.txt, ...) to use.
        cache_dir: the cache root for the validation scan and statistics (default `$ADAPTUNE_CACHE_DIR` or
            ~/.cache/adaptune).

    Returns:
        A `DatasetBundle`.

    Raises:
        DataError: (one line) unknown name, missing data, no readable image.
    """
    key = "default" if name is None else str(name).strip().lower().replace("_", "-")
    if key == "vggflowers":
        key = "vgg-flowers"
    if key not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    for label, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(fraction) < 1.0:
            raise DataError(f"{label} must be in [0, 1), got {fraction}")
    if float(val_fraction) + float(test_fraction) >= 1.0:
        raise DataError(f"val_fraction + test_fraction must be below 1, got {val_fraction} + {test_fraction}")

    if key == "default":
        root = embedded_dataset_dir()
        if not root.is_dir():
            raise DataError(f"the embedded default dataset is missing ({root}): pass --data-dir with your images")
        index = folders.index_folder(root, seed, val_fraction, test_fraction)
        return _folder_bundle(DEFAULT_NAME, index, "folder", None, f"embedded:{root}", cache_dir)

    if key == "folder":
        if data_dir is None:
            raise DataError("dataset 'folder' needs --data-dir: a folder of class sub-folders of images")
        index = folders.index_folder(data_dir, seed, val_fraction, test_fraction)
        return _folder_bundle("folder", index, "folder", None, f"folder:{index.root}", cache_dir)

    if data_dir is not None:
        if key == "dtd":
            index = folders.index_dtd(data_dir, dtd_split, seed, val_fraction, test_fraction)
        else:
            root = pathlib.Path(data_dir).expanduser()
            if (root / key).is_dir():
                root = root / key
            index = folders.index_folder(root, seed, val_fraction, test_fraction)
        return _folder_bundle(key, index, decathlon.policy_for(key), decathlon.DECATHLON_STATS[key],
                              f"folder:{index.root}", cache_dir)

    return _tfds_bundle(key, tfds_data_dir)


def _tfds_bundle(name, tfds_data_dir):
    builder = decathlon.open_builder(name, tfds_data_dir)
    sizes = decathlon.split_sizes(builder)
    mean, std = decathlon.DECATHLON_STATS[name]
    class_names = decathlon.class_names(builder, name)
    splits = {split: TFDSSplit(builder, split, count) for split, count in sizes.items()}
    return DatasetBundle(
        name=name,
        class_names=class_names,
        num_classes=len(class_names),
        split_sizes=dict(sizes),
        labelled_splits=tuple(s for s in decathlon.LABELLED_SPLITS if s in sizes),
        mean=tuple(mean),
        std=tuple(std),
        skipped=[],
        policy=decathlon.policy_for(name),
        source=f"tfds:{decathlon.TFDS_NAME}/{name}@{builder.data_dir}",
        layout="TFDS splits (test labels hidden: -1)",
        splits=splits,
    )


def _folder_bundle(name, index, policy, stats, source, cache_dir):
    """Validates the indexed files (cached scan), draws missing splits, computes statistics."""
    relpaths = sorted({rel for paths, _ in index.splits.values() for rel in paths})
    present = [rel for rel in relpaths if os.path.isfile(index.root / rel)]
    missing = sorted(set(relpaths) - set(present))
    result = scan.scan_files(index.root, present, cache_dir=cache_dir)
    logger.info("%s: validated %d files in %.2f s%s", name, len(present), result.seconds,
                " (cached)" if result.from_cache else "")

    skipped = [SkippedFile(str(index.root / rel), "file not found") for rel in missing]
    skipped += [SkippedFile(path, reason) for path, reason in result.skipped()]
    if skipped:
        shown = "; ".join(f"{pathlib.Path(s.path).name}: {s.reason}" for s in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(f"{len(skipped)} unreadable image file(s) skipped in {index.root}: {shown}{more} "
                      "(see DatasetBundle.skipped)", DataWarning, stacklevel=3)

    missing_set = set(missing)
    index = folders.draw_splits(index, lambda rel: rel not in missing_set and result.readable(rel))
    if "train" not in index.splits:
        raise DataError(f"no readable training image in {index.root} ({len(skipped)} unreadable)")
    folders.check_two_classes(index)
    train_labels = set(index.splits["train"][1])
    empty = [c for i, c in enumerate(index.class_names) if i not in train_labels]
    if empty:
        warnings.warn(f"{len(empty)} class(es) have no training image in {index.root}: {', '.join(empty[:5])}",
                      DataWarning, stacklevel=3)

    if stats is None:
        stats = result.mean_std(index.splits["train"][0])
    splits = {}
    for split, (paths, labels) in index.splits.items():
        records = [result.records[rel] for rel in paths]
        splits[split] = FileSplit(
            sources=[str(index.root / rel) for rel in paths],
            paths=[result.path_to_read(rel) for rel in paths],
            labels=list(labels),
            sizes=[(rec.height, rec.width) for rec in records],
        )
    return DatasetBundle(
        name=name,
        class_names=list(index.class_names),
        num_classes=len(index.class_names),
        split_sizes={split: len(s) for split, s in splits.items()},
        labelled_splits=tuple(splits),
        mean=tuple(stats[0]),
        std=tuple(stats[1]),
        skipped=skipped,
        policy=policy,
        source=source,
        layout=index.layout,
        splits=splits,
    )
