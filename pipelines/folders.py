"""Image-folder datasets: class sub-folders, optional split sub-folders, the DTD archive layout.

Layouts understood by `index_folder`:

- `<root>/{train,validation,test}/<class>/...` (validation may be named `val`, `valid` or `validation`):
  the splits as given; a missing validation or test split is drawn from train as below.
- `<root>/<class>/...`: one pool, split per class with a seeded shuffle (stratified): round(n * val_fraction)
  images to validation, round(n * test_fraction) to test, the rest (always at least one) to train.

The class of an image is the first folder level under the split (or the root); images deeper down
(omniglot: `<alphabet>/<character>/*.png`) belong to that first-level class. Hidden files, hidden folders and
files without an image extension are ignored.

The DTD archive (`dtd-r1.0.1.tar.gz`, unpacked): `<root>/dtd/images/<class>/*.jpg` or
`<root>/images/<class>/*.jpg`, with the official splits in `labels/train<k>.txt`, `val<k>.txt`, `test<k>.txt`
(k = 1..10, lines such as `banded/banded_0002.jpg`).
"""

import dataclasses
import pathlib
import warnings

import numpy as np

from pipelines.errors import DataError, DataWarning
from pipelines.scan import is_hidden, list_images

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "validation": "validation", "val": "validation", "valid": "validation",
    "test": "test", "testing": "test",
}


@dataclasses.dataclass
class FolderIndex:
    """Files of a folder dataset before validation.

    Attributes:
        root: the folder the relative paths start from.
        class_names: sorted class names.
        splits: {split: (relpaths, labels)} with relpaths relative to `root`, labels indices in class_names.
        layout: a short description ("split folders", "stratified split", "DTD labels/train1.txt", ...).
        fractions: {split: fraction} of the splits still to draw from train by `draw_splits`.
        seed: the seed of that draw.
        empty_classes: class folders that hold no image (left out of class_names).
    """

    root: pathlib.Path
    class_names: list
    splits: dict
    layout: str
    fractions: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    empty_classes: list = dataclasses.field(default_factory=list)


def canonical_split(name):
    return SPLIT_ALIASES.get(str(name).lower())


def _class_files(folder, root):
    """{class name: [relpath, ...]} for the first-level sub-folders of `folder`."""
    classes = {}
    for child in sorted(pathlib.Path(folder).iterdir()):
        if child.is_dir() and not is_hidden(child.name):
            classes[child.name] = [path.relative_to(root).as_posix() for path in list_images(child)]
    return classes


def find_split_folders(root):
    """{canonical split: folder} for the split sub-folders of `root` (empty when there are none)."""
    found = {}
    for child in sorted(pathlib.Path(root).iterdir()):
        split = canonical_split(child.name)
        if child.is_dir() and split is not None and split not in found:
            found[split] = child
    return found if "train" in found else {}


def stratified_split(files_by_class, fractions, seed):
    """Splits each class's files with a seeded shuffle.

    Args:
        files_by_class: {class index: sorted relpaths}.
        fractions: {split: fraction} for the splits to draw (e.g. {"validation": 0.1, "test": 0.1}).
        seed: the shuffle seed (the same seed, files and fractions give the same split).

    Returns:
        {split: [(relpath, class index), ...]} with "train" holding the rest, at least one file per class.
    """
    out = {"train": [], **{split: [] for split in fractions}}
    for label in sorted(files_by_class):
        files = sorted(files_by_class[label])
        rng = np.random.default_rng([int(seed), int(label)])
        order = rng.permutation(len(files))
        start = 0
        for split, fraction in fractions.items():
            count = int(round(len(files) * float(fraction)))
            count = max(0, min(count, len(files) - 1 - start))
            out[split].extend((files[i], label) for i in order[start:start + count])
            start += count
        out["train"].extend((files[i], label) for i in order[start:])
    return {split: sorted(pairs) for split, pairs in out.items()}


def index_folder(root, seed=0, val_fraction=0.1, test_fraction=0.1):
    """Indexes a folder dataset (see the module docstring); raises DataError when there is nothing to load."""
    root = pathlib.Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist: pass --data-dir with a folder of class sub-folders")
    split_folders = find_split_folders(root)
    if split_folders:
        per_split = {split: _class_files(folder, root) for split, folder in split_folders.items()}
        layout = "split folders " + ", ".join(folder.name for folder in split_folders.values())
    else:
        per_split = {"train": _class_files(root, root)}
        layout = "stratified split"
    class_names = sorted({name for classes in per_split.values() for name, files in classes.items() if files})
    if not class_names:
        raise DataError(
            f"no images in class sub-folders of {root}: expected <data-dir>/<class>/*.jpg or "
            "<data-dir>/{train,validation,test}/<class>/*.jpg"
        )
    empty = sorted({name for classes in per_split.values() for name in classes} - set(class_names))
    warn_empty_classes(root, class_names, empty)
    label_of = {name: i for i, name in enumerate(class_names)}
    splits = {}
    for split, classes in per_split.items():
        splits[split] = sorted((rel, label_of[name]) for name, files in classes.items() for rel in files)
    return FolderIndex(root, class_names, {split: _unzip(pairs) for split, pairs in splits.items()}, layout,
                       _missing_fractions(splits, val_fraction, test_fraction), int(seed), empty)


def _named(names):
    return ", ".join(repr(name) for name in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_two_classes(index):
    """DataError (one line) when `index` has fewer than two classes (naming the empty class folders, if any)."""
    if len(index.class_names) >= 2:
        return
    empty = list(index.empty_classes)
    also = f" (class folder{'s' if len(empty) > 1 else ''} {_named(empty)} {'hold' if len(empty) > 1 else 'holds'} no images)" if empty else ""
    raise DataError(
        f"{index.root} has one class, {index.class_names[0]!r}{also}: a classifier needs at least two; "
        "put each class's images in its own sub-folder (<data-dir>/<class>/*.jpg)"
    )


def warn_empty_classes(root, class_names, empty):
    """A DataWarning (one line) naming the class folders without images, when at least two classes remain."""
    shown = _named(empty)
    if empty and len(class_names) >= 2:
        warnings.warn(
            f"class folder{'s' if len(empty) > 1 else ''} {shown} in {root} {'hold' if len(empty) > 1 else 'holds'} no images "
            f"and {'are' if len(empty) > 1 else 'is'} left out ({len(class_names)} classes remain); put images in "
            f"{'them' if len(empty) > 1 else 'it'} or remove {'them' if len(empty) > 1 else 'it'}",
            DataWarning,
            stacklevel=3,
        )


def draw_splits(index, readable):
    """Drops unreadable files and draws the missing splits from train (after validation, so that a bad file
    never takes a place in a split). Mutates and returns `index`."""
    splits = {}
    for split, (relpaths, labels) in index.splits.items():
        splits[split] = [(rel, label) for rel, label in zip(relpaths, labels) if readable(rel)]
    fractions = index.fractions
    if fractions:
        by_class = {}
        for rel, label in splits["train"]:
            by_class.setdefault(label, []).append(rel)
        drawn = stratified_split(by_class, fractions, index.seed)
        splits.update(drawn)
        index.layout += f" ({' and '.join(fractions)} drawn from train with seed {index.seed})"
    index.splits = {split: _unzip(splits[split]) for split in SPLITS if split in splits and splits[split]}
    index.fractions = {}
    return index


def _unzip(pairs):
    return [rel for rel, _ in pairs], [label for _, label in pairs]


def find_dtd_root(data_dir):
    """The DTD folder (the one holding `images/`) under `data_dir`, or None."""
    data_dir = pathlib.Path(data_dir).expanduser()
    for candidate in (data_dir / "dtd", data_dir):
        if (candidate / "images").is_dir():
            return candidate
    return None


def index_dtd(data_dir, dtd_split=1, seed=0, val_fraction=0.1, test_fraction=0.1):
    """Indexes the DTD archive; uses `labels/{train,val,test}<dtd_split>.txt` when present, else the class
    folders under `images/` (or `data_dir` itself) as a plain folder dataset."""
    dtd_root = find_dtd_root(data_dir)
    if dtd_root is None:
        return index_folder(data_dir, seed, val_fraction, test_fraction)
    images = dtd_root / "images"
    label_files = {split: dtd_root / "labels" / f"{stem}{int(dtd_split)}.txt"
                   for split, stem in (("train", "train"), ("validation", "val"), ("test", "test"))}
    if not label_files["train"].is_file():
        if int(dtd_split) != 1 and (dtd_root / "labels").is_dir():
            raise DataError(f"DTD split {dtd_split} not found: {label_files['train']} is missing (splits are 1..10)")
        return index_folder(images, seed, val_fraction, test_fraction)
    class_names = sorted(child.name for child in images.iterdir() if child.is_dir() and not is_hidden(child.name))
    label_of = {name: i for i, name in enumerate(class_names)}
    splits = {}
    for split, label_file in label_files.items():
        if not label_file.is_file():
            continue
        pairs = []
        for line in label_file.read_text(encoding="utf-8").splitlines():
            rel = line.strip()
            if not rel:
                continue
            class_name = rel.split("/", 1)[0]
            if class_name not in label_of:
                raise DataError(f"{label_file} names class {class_name!r}, which has no folder in {images}")
            pairs.append((rel, label_of[class_name]))
        splits[split] = pairs
    return FolderIndex(images, class_names, {split: _unzip(pairs) for split, pairs in splits.items()},
                       f"DTD labels/{{train,val,test}}{int(dtd_split)}.txt",
                       _missing_fractions(splits, val_fraction, test_fraction), int(seed))


def _missing_fractions(splits, val_fraction, test_fraction):
    fractions = {}
    if "validation" not in splits and val_fraction > 0:
        fractions["validation"] = float(val_fraction)
    if "test" not in splits and test_fraction > 0:
        fractions["test"] = float(test_fraction)
    return fractions
