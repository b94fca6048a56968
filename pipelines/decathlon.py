"""The Visual Decathlon tasks through TFDS (`visual_domain_decathlon/<name>`), offline only.

Facts (the Decathlon authors' code and the TFDS builder; docs/methods/spottune.md): images with the shorter side 72, splits train / validation / test, test
labels hidden (TFDS stores -1), per-dataset channel statistics published by the authors (grey datasets are
decoded as RGB, so their one value is replicated to the three channels).

The TFDS builder downloads from the dataset's web site, and offline that download retries for about 200 s
before failing. `open_builder` therefore never downloads: it uses prepared data (`dataset_info.json` in
`<tfds_data_dir>/visual_domain_decathlon/<name>/<version>`), or prepares it from the archives when they lie in
TFDS's manual folder (`<tfds_data_dir>/downloads/manual`), and otherwise raises DataError at once.
"""

import logging
import os
import pathlib

from pipelines.errors import DataError

logger = logging.getLogger(__name__)

TFDS_NAME = "visual_domain_decathlon"

DECATHLON_NAMES = (
    "aircraft", "cifar100", "daimlerpedcls", "dtd", "gtsrb", "imagenet12", "omniglot", "svhn", "ucf101",
    "vgg-flowers",
)

NUM_CLASSES = {
    "aircraft": 100, "cifar100": 100, "daimlerpedcls": 2, "dtd": 47, "gtsrb": 43, "imagenet12": 1000,
    "omniglot": 1623, "svhn": 10, "ucf101": 101, "vgg-flowers": 102,
}

# (mean, std), RGB, images in [0, 1] (the Decathlon authors' code).
DECATHLON_STATS = {
    "aircraft": ((0.4798, 0.5107, 0.5344), (0.2107, 0.2051, 0.2373)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "daimlerpedcls": ((0.4820, 0.4820, 0.4820), (0.2361, 0.2361, 0.2361)),
    "dtd": ((0.5270, 0.4703, 0.4240), (0.2523, 0.2409, 0.2499)),
    "gtsrb": ((0.3392, 0.3118, 0.3205), (0.2756, 0.2658, 0.2709)),
    "imagenet12": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "omniglot": ((0.0810, 0.0810, 0.0810), (0.2705, 0.2705, 0.2705)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "ucf101": ((0.4995, 0.4988, 0.4998), (0.1090, 0.1081, 0.1068)),
    "vgg-flowers": ((0.4341, 0.3831, 0.2971), (0.2851, 0.2384, 0.2640)),
}

_RANDOM_CROP = ("aircraft", "cifar100", "dtd", "ucf101", "vgg-flowers")
_RESIZE_ONLY = ("daimlerpedcls",)

# Splits whose labels are known; the test labels of the Decathlon are hidden (-1).
LABELLED_SPLITS = ("train", "validation")

# The archives the builder reads (TFDS url_checksums/visual_domain_decathlon.txt).
_ARCHIVES = ("decathlon-1.0-devkit.tar.gz", "decathlon-1.0-data.tar.gz")
_IMAGENET_ARCHIVES = ("decathlon-1.0-devkit.tar.gz", "decathlon-1.0-data-imagenet.tar")


def policy_for(name):
    """The `pipelines.preprocessing` policy of a Decathlon task (imagenet12: centre crop, our reading)."""
    if name in _RANDOM_CROP:
        return "decathlon-random-crop"
    if name in _RESIZE_ONLY:
        return "decathlon-resize"
    return "decathlon-centre-crop"


def default_tfds_data_dir():
    return os.environ.get("TFDS_DATA_DIR") or str(pathlib.Path.home() / "tensorflow_datasets")


def required_archives(name):
    return _IMAGENET_ARCHIVES if name == "imagenet12" else _ARCHIVES


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise DataError(
            f"the Visual Decathlon needs tensorflow-datasets and importlib_resources ({error}): "
            "pip install tensorflow-datasets importlib_resources, or pass --data-dir with the images"
        ) from error
    return tfds


def open_builder(name, tfds_data_dir=None):
    """The prepared TFDS builder of `visual_domain_decathlon/<name>`; never downloads.

    Raises:
        DataError: (at once, one line) when the data is neither prepared nor available as archives in the
            manual folder.
    """
    tfds = _import_tfds()
    data_dir = str(pathlib.Path(tfds_data_dir or default_tfds_data_dir()).expanduser())
    try:
        builder = tfds.builder(f"{TFDS_NAME}/{name}", data_dir=data_dir)
    except Exception as error:
        raise DataError(f"cannot open TFDS {TFDS_NAME}/{name} in {data_dir}: {error}".replace("\n", " ")) from error
    if builder.is_prepared():
        return builder
    manual_dir = pathlib.Path(data_dir) / "downloads" / "manual"
    archives = required_archives(name)
    if all((manual_dir / archive).is_file() for archive in archives):
        logger.warning("preparing %s/%s from the archives in %s (once; this takes a while)", TFDS_NAME, name,
                       manual_dir)
        try:
            builder.download_and_prepare(
                download_dir=str(pathlib.Path(data_dir) / "downloads"),
                download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)),
            )
        except Exception as error:
            raise DataError(
                f"preparing {TFDS_NAME}/{name} from {manual_dir} failed: {error}".replace("\n", " ")
            ) from error
        return builder
    raise DataError(
        f"Visual Decathlon '{name}' is not prepared in {builder.data_dir} (no download is attempted offline): "
        f"pass --tfds-data-dir with a prepared TFDS data dir, or put {' and '.join(archives)} in "
        f"{manual_dir} (TFDS's manual dir), or pass --data-dir with the images in class folders"
    )


def split_sizes(builder):
    """{split: number of examples} from the builder's dataset_info."""
    return {split: int(info.num_examples) for split, info in builder.info.splits.items()}


def class_names(builder, name):
    try:
        names = list(builder.info.features["label"].names)
    except (KeyError, AttributeError):
        names = []
    return names or [str(i) for i in range(NUM_CLASSES[name])]
