"""One-time validation scan of image files, with per-file channel statistics, cached as JSON.

Real folders hold greyscale, palette, RGBA, CMYK and 16-bit images, GIFs and BMPs among the JPEGs, truncated
files and files that are no images at all. TensorFlow's `tf.io.decode_image(channels=3)` decodes JPEG (also
greyscale and CMYK), PNG (palette, alpha, 1-bit and 16-bit) and GIF (first frame) correctly; it decodes
palette BMPs wrongly and cannot read TIFF, and one undecodable file would stop a tf.data pipeline. So, once
per set of files:

1. every file is fully decoded with Pillow (JPEGs in draft mode: DCT scaling, so a 640 px photograph costs
   about as much as a thumbnail), which finds truncated and non-image files;
2. JPEG/PNG/GIF files are kept as they are ("ok"); other readable formats (BMP, WebP, TIFF, ...) are
   converted once to an RGB PNG in the cache ("converted"); unreadable files are "skipped" with the reason;
3. the sum and sum of squares of each channel of the centre 64 x 64 crop (shorter side resized to 64,
   values in [0, 1]) are kept per file, so the mean and std of any subset (the training split, whichever
   way it was drawn) come without decoding again.

The scan runs on a thread pool (Pillow releases the GIL while decoding). The result is cached in
`<cache root>/stats/<key>.json`, where the cache root is `$ADAPTUNE_CACHE_DIR` or `~/.cache/adaptune`
and the key hashes the sorted relative paths, sizes and modification times of all files: any change to
the folder makes a new scan.
"""

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import tempfile
import time
import warnings

import numpy as np

logger = logging.getLogger(__name__)

SCAN_VERSION = 1
STATS_SIZE = 64
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
     ".pbm", ".pnm"}
)
# Formats that tf.io.decode_image(channels=3, expand_animations=False) reads correctly in every mode that
# Pillow reports for them (MPO: a JPEG with extra pictures, decoded as its first).
NATIVE_FORMATS = frozenset({"JPEG", "MPO", "PNG", "GIF"})
NATIVE_JPEG_MODES = frozenset({"L", "RGB", "CMYK"})


def cache_root(cache_dir=None):
    """The adaptune cache folder: `cache_dir`, else `$ADAPTUNE_CACHE_DIR`, else `~/.cache/adaptune`."""
    if cache_dir is not None:
        return pathlib.Path(cache_dir)
    env = os.environ.get("ADAPTUNE_CACHE_DIR")
    if env:
        return pathlib.Path(env)
    return pathlib.Path.home() / ".cache" / "adaptune"


def is_hidden(name):
    return name.startswith(".") or name.startswith("__MACOSX") or name in ("Thumbs.db", "desktop.ini")


def list_images(folder):
    """Image files under `folder`, recursively, sorted; hidden files and folders and other extensions ignored."""
    folder = pathlib.Path(folder)
    found = []
    ignored = 0
    seen = set()  # real paths of the folders walked: symlinked folders are followed, loops are not
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
        for filename in filenames:
            if is_hidden(filename):
                continue
            if os.path.splitext(filename)[1].lower() in IMAGE_EXTENSIONS:
                found.append(pathlib.Path(dirpath) / filename)
            else:
                ignored += 1
    if ignored:
        logger.info("ignored %d non-image file(s) under %s", ignored, folder)
    return sorted(found)


@dataclasses.dataclass
class FileRecord:
    """What the scan found about one file.

    Attributes:
        status: "ok" (read by TensorFlow as is), "converted" (read from `path_to_read`), or "skipped".
        reason: why a file was converted or skipped ("" when ok).
        width, height: the image size in pixels (0 when skipped).
        sums: per channel (R, G, B) sum of values in [0, 1] over the 64 x 64 stats crop, then sums of squares,
            then the pixel count (7 numbers; empty when skipped).
        converted: the path of the converted PNG ("" unless status is "converted").
    """

    status: str
    reason: str = ""
    width: int = 0
    height: int = 0
    sums: list = dataclasses.field(default_factory=list)
    converted: str = ""


@dataclasses.dataclass
class ScanResult:
    """The scan of a set of files under one root: `records` maps the relative path to its `FileRecord`."""

    root: pathlib.Path
    records: dict
    seconds: float
    from_cache: bool
    cache_file: pathlib.Path | None

    def path_to_read(self, relpath):
        record = self.records[relpath]
        if record.status == "converted":
            return record.converted
        return str(self.root / relpath)

    def readable(self, relpath):
        return self.records[relpath].status != "skipped"

    def skipped(self):
        return [(str(self.root / rel), rec.reason) for rel, rec in sorted(self.records.items())
                if rec.status == "skipped"]

    def mean_std(self, relpaths):
        """Channel mean and std (RGB, images in [0, 1]) over the stats crops of the readable `relpaths`."""
        total = np.zeros(7, dtype=np.float64)
        for rel in relpaths:
            record = self.records[rel]
            if record.status != "skipped":
                total += np.asarray(record.sums, dtype=np.float64)
        count = total[6]
        if count <= 0:
            return (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        mean = total[0:3] / count
        std = np.sqrt(np.maximum(total[3:6] / count - mean**2, 1e-12))
        return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def _fingerprint(root, relpaths):
    digest = hashlib.sha256(f"adaptune-scan-v{SCAN_VERSION}-{STATS_SIZE}\n".encode())
    for rel in sorted(relpaths):
        stat = os.stat(root / rel)
        digest.update(f"{rel}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def _to_rgb(image):
    """A Pillow image in any mode -> RGB, the way tf.io.decode_image(channels=3) reads it."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        if image.mode != "F":
            array = array / 257.0
        array = np.clip(np.round(array), 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L").convert("RGB")
    if image.mode == "RGB":
        return image
    if image.mode == "LA":
        image = image.convert("L")  # drop alpha, like TensorFlow (no compositing)
    elif image.mode in ("RGBA", "RGBa", "RGBX"):
        image = image.convert("RGBA")
    return image.convert("RGB")


def _stats_sums(rgb):
    from PIL import Image

    width, height = rgb.size
    scale = STATS_SIZE / max(1, min(width, height))
    new_size = (max(STATS_SIZE, round(width * scale)), max(STATS_SIZE, round(height * scale)))
    small = rgb.resize(new_size, Image.BILINEAR)
    left = (new_size[0] - STATS_SIZE) // 2
    top = (new_size[1] - STATS_SIZE) // 2
    crop = np.asarray(small.crop((left, top, left + STATS_SIZE, top + STATS_SIZE)), dtype=np.float64) / 255.0
    pixels = crop.reshape(-1, 3)
    return [*pixels.sum(axis=0).tolist(), *(pixels**2).sum(axis=0).tolist(), float(pixels.shape[0])]


def inspect_file(path, convert_dir):
    """Decodes one file with Pillow and returns its `FileRecord` (never raises for a bad file)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            fmt = image.format or "?"
            mode = image.mode
            width, height = image.size
            if fmt == "JPEG" and mode in ("RGB", "L", "CMYK"):
                image.draft(mode, (STATS_SIZE, STATS_SIZE))  # DCT scaling; still reads all the data
            image.seek(0)
            image.load()
            rgb = _to_rgb(image)
            sums = _stats_sums(rgb)
            native = fmt in NATIVE_FORMATS and (fmt not in ("JPEG", "MPO") or mode in NATIVE_JPEG_MODES)
            if native:
                return FileRecord("ok", "", width, height, sums)
            # Convert at full size (the draft above only applies to JPEG modes TensorFlow reads).
            target = pathlib.Path(convert_dir) / (_file_key(path) + ".png")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_suffix(f".tmp{os.getpid()}.png")
                rgb.save(tmp, format="PNG")
                os.replace(tmp, target)
            return FileRecord("converted", f"{fmt} {mode} converted to RGB PNG", width, height, sums,
                              str(target))
    except Exception as error:  # any decoding failure means: skip this file
        reason = f"{type(error).__name__}: {error}".replace("\n", " ")[:200]
        return FileRecord("skipped", reason)


def _file_key(path):
    stat = os.stat(path)
    return hashlib.sha256(f"{os.path.abspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}".encode()).hexdigest()[:24]


def scan_files(root, relpaths, cache_dir=None, workers=None):
    """Scans the files `root / relpath` (cached); returns a `ScanResult`.

    Args:
        root: the dataset folder; `relpaths` are relative to it (strings with '/' separators).
        relpaths: the files to scan.
        cache_dir: the cache root (default `cache_root()`).
        workers: threads (default: the number of CPUs).
    """
    start = time.perf_counter()
    root = pathlib.Path(root)
    relpaths = sorted(set(relpaths))
    base = cache_root(cache_dir)
    cache_file = base / "stats" / f"{_fingerprint(root, relpaths)}.json"
    records = _read_cache(cache_file, relpaths)
    if records is not None:
        return ScanResult(root, records, time.perf_counter() - start, True, cache_file)

    convert_dir = base / "converted"
    workers = workers or os.cpu_count() or 2
    # Filters are process-wide (catch_warnings is not thread-safe): set them here, not in the workers.
    with warnings.catch_warnings(), concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        warnings.filterwarnings("ignore", message="Palette images with Transparency")
        warnings.filterwarnings("ignore", message="Image size .* exceeds limit")  # DecompressionBombWarning
        results = list(pool.map(lambda rel: inspect_file(root / rel, convert_dir), relpaths))
    records = dict(zip(relpaths, results))
    _write_cache(cache_file, root, records)
    seconds = time.perf_counter() - start
    logger.info("scanned %d image files under %s in %.1f s", len(relpaths), root, seconds)
    return ScanResult(root, records, seconds, False, cache_file)


def _read_cache(cache_file, relpaths):
    try:
        with open(cache_file, encoding="utf-8") as handle:
            data = json.load(handle)
        if data.get("version") != SCAN_VERSION:
            return None
        records = {rel: FileRecord(**data["files"][rel]) for rel in relpaths}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for record in records.values():
        if record.status == "converted" and not os.path.exists(record.converted):
            return None  # the converted copies were cleaned away: scan again
    return records


def _compact(record):
    """A FileRecord as a JSON dict without its empty fields, sums to 7 significant digits."""
    data = {key: value for key, value in dataclasses.asdict(record).items() if value not in ("", [], 0)}
    if "sums" in data:
        data["sums"] = [float(f"{value:.7g}") for value in data["sums"]]
    return data


def _write_cache(cache_file, root, records):
    data = {
        "version": SCAN_VERSION,
        "root": str(root),
        "stats_size": STATS_SIZE,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "files": {rel: _compact(rec) for rel, rec in records.items()},
    }
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=cache_file.parent, suffix=".tmp", delete=False,
                                         encoding="utf-8") as handle:
            json.dump(data, handle, separators=(",", ":"))
        os.replace(handle.name, cache_file)
    except OSError as error:
        logger.warning("cannot write the scan cache %s (%s); the next load scans again", cache_file, error)
