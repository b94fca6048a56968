"""Peak memory of one training epoch through the input pipeline, for a small and a large folder dataset.

    python -m bench.input_memory [--counts 1000,20000] [--caches auto,off] [--side 32]
                                 [--image-size 32] [--batch-size 32] [--classes 10]

Writes `count` random JPEGs (`--side` px, in `--classes` class folders; the folder loader draws
validation and test from them, 10 % each) into a temporary folder per count, then for each count
and cache mode runs, in a fresh Python process (so that no run inherits another's peak), what
`python -m app.train --dataset folder` runs before the model sees a batch: `load_dataset("folder")`
(the load-time scan of every file) and one epoch of the training pipeline,
`DatasetBundle.batches("train", training=True, epochs=(0, 1))` (JPEG decode, resize, augmentation,
shuffle, batching), iterated without a model. It reports, from /proc/self/status:

- load growth: VmHWM after loading - VmRSS after importing TensorFlow (the file list and the scan);
- epoch growth: VmHWM after the epoch - VmRSS before it (what the pipeline holds while it runs);
- peak: VmHWM at the end (the process's high-water mark, TensorFlow included);

and the ratio of the large count's growth to the small count's (goal: flat, i.e. the pipeline streams).
Cache "auto" is what `app.train` does (`cache=None`: the decoded, resized images of a split are
kept in memory when they take less than `DatasetBundle.cache_limit_bytes`, 1 GiB); "off" streams
(`cache=False`), as the 1 GiB limit makes larger datasets do.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CACHES = {"auto": None, "off": False}
FLAT_GOAL = 1.5  # large / small epoch growth at most this: "flat"


def memory_kib():
    """(VmRSS, VmHWM) of this process in KiB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def write_jpegs(root, count, classes, side, seed=0):
    """`count` random-colour JPEGs (smooth gradients plus noise, `side` px) in `classes` class folders under `root`."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, side, dtype=np.float32)
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class_{c:02d}"), exist_ok=True)
    for i in range(count):
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        image = colour * ramp[:, None, None] + rng.normal(0, 20, (side, side, 3))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            os.path.join(root, f"class_{i % classes:02d}", f"{i:06d}.jpg"), quality=85
        )
    return root


def child(data_dir, cache, image_size, batch_size, cache_dir):
    """In this process: load the folder, run one training epoch; returns the figures as a dict."""
    import tensorflow as tf  # noqa: F401  (its memory is the baseline, not the pipeline's)

    rss_import, _ = memory_kib()
    from pipelines.loader import load_dataset

    start = time.perf_counter()
    bundle = load_dataset("folder", data_dir=data_dir, cache_dir=cache_dir)
    load_s = time.perf_counter() - start
    _, hwm_load = memory_kib()
    ds = bundle.batches("train", batch_size, training=True, image_size=image_size, seed=0, cache=CACHES[cache], epochs=(0, 1))
    rss_before, _ = memory_kib()
    images, start = 0, time.perf_counter()
    for batch, _ in ds:
        images += int(batch.shape[0])
    epoch_s = time.perf_counter() - start
    _, hwm_end = memory_kib()
    return {
        "train_images": images,
        "train_split": int(bundle.split_sizes["train"]),
        "load_growth_kib": hwm_load - rss_import,
        "epoch_growth_kib": hwm_end - rss_before,
        "peak_kib": hwm_end,
        "load_s": load_s,
        "epoch_s": epoch_s,
    }


def run_child(data_dir, cache, image_size, batch_size, cache_dir):
    command = [sys.executable, "-m", "bench.input_memory", "--child", data_dir, "--caches", cache,
               "--image-size", str(image_size), "--batch-size", str(batch_size), "--cache-dir", cache_dir]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench.input_memory: the child for {data_dir} ({cache}) failed: {tail}")
    return json.loads(lines[-1])


def parse_counts(text):
    try:
        counts = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SystemExit(f"--counts takes a comma list of image counts, got {text!r}") from None
    if not counts or min(counts) < 10:
        raise SystemExit(f"--counts needs image counts of at least 10, got {text!r}")
    return counts


def table(results, counts, caches):
    """Lines: one row per (count, cache), then the growth ratio of the largest count to the smallest per cache."""
    mib = 1024.0
    header = f"  {'images':>8}{'train':>8}{'cache':>7}{'load growth MiB':>17}{'epoch growth MiB':>18}{'peak RSS MiB':>14}{'epoch s':>9}"
    lines = [header, "  " + "-" * (len(header) - 2)]
    for cache in caches:
        for count in counts:
            r = results[(count, cache)]
            lines.append(f"  {count:>8}{r['train_images']:>8}{cache:>7}{r['load_growth_kib'] / mib:>17.1f}"
                         f"{r['epoch_growth_kib'] / mib:>18.1f}{r['peak_kib'] / mib:>14.1f}{r['epoch_s']:>9.1f}")
    small, large = counts[0], counts[-1]
    lines.append("")
    lines.append(f"  {large} / {small} images (goal: epoch growth flat, at most {FLAT_GOAL}x):")
    for cache in caches:
        a, b = results[(small, cache)], results[(large, cache)]
        epoch = b["epoch_growth_kib"] / max(a["epoch_growth_kib"], 1)
        load = b["load_growth_kib"] / max(a["load_growth_kib"], 1)
        verdict = "met" if epoch <= FLAT_GOAL else "NOT met"
        lines.append(f"    cache {cache:<5} epoch growth {epoch:.2f}x ({verdict}), load growth {load:.2f}x, "
                     f"peak RSS {b['peak_kib'] / max(a['peak_kib'], 1):.2f}x")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--counts", default="1000,20000", help="image counts, comma list (default 1000,20000)")
    p.add_argument("--caches", default="auto,off", help="cache modes: auto (app.train's) and/or off (default both)")
    p.add_argument("--side", type=int, default=32, help="side of the written JPEGs (default 32)")
    p.add_argument("--image-size", type=int, default=32, help="the pipeline's image size (default 32)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--child", metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    caches = [c.strip() for c in args.caches.split(",") if c.strip()]
    if not caches or set(caches) - set(CACHES):
        raise SystemExit(f"--caches takes auto and/or off, got {args.caches!r}")
    if args.child:
        print(json.dumps(child(args.child, caches[0], args.image_size, args.batch_size, args.cache_dir)))
        return 0
    counts = parse_counts(args.counts)

    print(f"one training epoch of the folder pipeline, {args.side} px JPEGs -> {args.image_size} px, batch {args.batch_size}, "
          f"one fresh process per row; {os.cpu_count()} CPU(s)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="adaptune-memory-bench-") as tmp:
        for count in counts:
            data_dir = write_jpegs(os.path.join(tmp, f"data_{count}"), count, args.classes, args.side)
            for cache in caches:
                results[(count, cache)] = run_child(data_dir, cache, args.image_size, args.batch_size, os.path.join(tmp, f"cache_{count}_{cache}"))
    print()
    for line in table(results, counts, caches):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
