"""Builds the embedded default dataset (assets/datasets/clothing-mini) from clothing-dataset-small.

    python -m pipelines.make_embedded --source ../shared/data/clothing-small --out assets/datasets/clothing-mini

Deterministic: for each class (all ten), the files of each source split are sorted by name and a seeded
random sample is kept (at most 150 train, 40 validation, 40 test images per class); each image is
centre-cropped to a square, resized to 64 x 64 (Lanczos) and saved as baseline JPEG, quality 90, without
metadata, under the same file name. The source LICENSE (CC0) is copied next to the images and a README.md
records the provenance. Needs only Pillow and NumPy.
"""

import argparse
import pathlib
import shutil
import sys

import numpy as np

SPLITS = ("train", "validation", "test")
DEFAULT_LIMITS = {"train": 150, "validation": 40, "test": 40}
IMAGE_SIZE = 64
QUALITY = 90
SEED = 0
_EXTENSIONS = (".jpg", ".jpeg", ".png")

README = """# clothing-mini: the embedded default dataset

{total} photographs of clothing in {num_classes} classes, 64 x 64 RGB JPEG, in `{{train,validation,test}}/<class>/`.

| split | images | per class |
|---|---|---|
{table}

Made from **clothing-dataset-small** by Alexey Grigorev (https://github.com/alexeygrigorev/clothing-dataset-small),
released under CC0 1.0 (public domain dedication; see `LICENSE`, copied from the source), itself a subset of
https://github.com/alexeygrigorev/clothing-dataset. The source images have their shorter side scaled to 128 px.

How it was made (deterministic; re-run, adding `--overwrite`, to reproduce it byte for byte with the same
Pillow version):

    python -m pipelines.make_embedded --source ../shared/data/clothing-small --out assets/datasets/clothing-mini

For each class and source split (train, validation, test), the file names are sorted and a random sample
(NumPy seed {seed}) of at most {limits} images per class is kept; each image is
centre-cropped to a square, resized to 64 x 64 (Lanczos) and saved as JPEG quality {quality} without metadata,
under its source file name.

`pipelines.load_dataset(None)` (or "default") loads this folder as an ordinary folder dataset.
"""


def _sample(files, limit, seed):
    files = sorted(files)
    if len(files) <= limit:
        return files
    rng = np.random.default_rng(seed)
    keep = rng.choice(len(files), size=limit, replace=False)
    return sorted(files[i] for i in keep)


def _convert(source, target):
    from PIL import Image

    with Image.open(source) as image:
        image = image.convert("RGB")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
        image.save(target, format="JPEG", quality=QUALITY, optimize=False, progressive=False)


def make_embedded(source, out, limits=None, seed=SEED, overwrite=False):
    """Writes the embedded dataset; returns {split: {class: count}}."""
    source, out = pathlib.Path(source), pathlib.Path(out)
    limits = dict(DEFAULT_LIMITS if limits is None else limits)
    if not (source / "train").is_dir():
        raise SystemExit(f"{source} has no train/ folder: expected clothing-dataset-small's layout")
    existing = [out / split for split in SPLITS if (out / split).exists()]
    if existing and not overwrite:
        raise SystemExit(f"{out} already holds {', '.join(p.name for p in existing)}: pass --overwrite to rebuild")
    for folder in existing:
        shutil.rmtree(folder)
    classes = sorted(p.name for p in (source / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    counts = {}
    for split_index, split in enumerate(SPLITS):
        counts[split] = {}
        for class_index, name in enumerate(classes):
            folder = source / split / name
            files = [p for p in folder.iterdir() if p.suffix.lower() in _EXTENSIONS] if folder.is_dir() else []
            chosen = _sample(files, limits[split], [seed, split_index, class_index])
            target_dir = out / split / name
            target_dir.mkdir(parents=True, exist_ok=True)
            written = 0
            for path in chosen:
                try:
                    _convert(path, target_dir / (path.stem + ".jpg"))
                    written += 1
                except OSError as error:
                    print(f"skipped {path}: {error}", file=sys.stderr)
            counts[split][name] = written
    if (source / "LICENSE").is_file():
        shutil.copyfile(source / "LICENSE", out / "LICENSE")
    table = "\n".join(
        f"| {split} | {sum(counts[split].values())} | "
        + ", ".join(f"{name} {count}" for name, count in counts[split].items()) + " |"
        for split in SPLITS
    )
    limits_text = ", ".join(f"{limits[split]} {split}" for split in SPLITS)
    (out / "README.md").write_text(README.format(
        total=sum(sum(c.values()) for c in counts.values()), num_classes=len(classes), table=table, seed=seed,
        limits=limits_text, quality=QUALITY), encoding="utf-8")
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="clothing-dataset-small: {train,validation,test}/<class>/")
    parser.add_argument("--out", required=True, help="the output folder (assets/datasets/clothing-mini)")
    parser.add_argument("--overwrite", action="store_true", help="replace the splits already in --out")
    args = parser.parse_args(argv)
    counts = make_embedded(args.source, args.out, overwrite=args.overwrite)
    total = sum(sum(c.values()) for c in counts.values())
    size = sum(p.stat().st_size for p in pathlib.Path(args.out).rglob("*") if p.is_file())
    print(f"wrote {total} images ({', '.join(f'{s} {sum(c.values())}' for s, c in counts.items())}), "
          f"{size / 1e6:.2f} MB, to {args.out}")


if __name__ == "__main__":
    main()
