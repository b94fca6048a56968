"""How far training is from what the CPU can do, and whether the input pipeline keeps up, in one run.

    python -m bench.training_efficiency [--cases resnet20:32] [--strategies finetune,spottune]
                                        [--steps 6] [--batch-size 32] [--data-dir DIR]

Prints, for each backbone and strategy:
- training images/s (median of `--repeats` timings of `--steps` `train_on_batch` steps on random
  images, after 2 warm-up steps; weights random, speed does not depend on them);
- achieved GFLOP/s, counted as (forward multiply-adds of the network as trained, one image) x 2
  FLOP per multiply-add x 3 (forward + backward ~ 3 forwards) x images/s. The forward count is read
  from an eager forward pass in training mode, so SpotTune's includes both copies of every block and
  the policy network (its frozen copy needs no weight gradient, so its "x 3" overstates a little);
- that figure as a percentage of the machine's peak, measured in the same process as the best of
  a few dense float32 `tf.matmul` (`--matmul-size` square, 2 n^3 FLOP each);
- SpotTune's step time over fine-tuning's on the same backbone;
- the input pipeline alone: the project's training pipeline (`DatasetBundle.batches`: JPEG decode,
  resize, the training augmentation, batching; no in-memory cache, so every image is decoded) on a
  folder dataset, iterated without a model, in images/s, against the fastest training consumption
  of that image size (goal: at least 3 times).

The folder dataset is `--data-dir` (default ../shared/data/clothing-small when present, else a small
set of random JPEGs written to a temporary folder).
"""

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from bench.routed_latency import macs

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scale": 1 / 255}
DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "clothing-small"
PIPELINE_GOAL = 3.0


def parse_cases(text):
    cases = []
    for item in text.split(","):
        name, size = item.strip().split(":")
        cases.append((name, int(size)))
    return cases


def matmul_peak_gflops(n, repeats=5):
    """Best GFLOP/s of a dense float32 n x n matmul in this process (TensorFlow's own threads)."""
    a = tf.random.uniform((n, n), dtype=tf.float32)
    b = tf.random.uniform((n, n), dtype=tf.float32)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def build_trainer(strategy_name, backbone_name):
    from app.trainer import compile_trainer
    from models.backbones import build_backbone
    from models.strategies import StrategyOptions, get_strategy

    keras.utils.set_random_seed(0)
    backbone = build_backbone(backbone_name, weights="none")
    strategy = get_strategy(strategy_name)
    options = StrategyOptions(k=3 if strategy.requires_k else None)
    network = strategy.build(backbone, 10, NORM, options)
    model = compile_trainer(strategy, network, options, strategy.training_terms(network, options), keras.optimizers.SGD(0.01, momentum=0.9))
    return network, model


def training_figures(strategy_name, backbone_name, image_size, batch_size, steps, repeats):
    network, model = build_trainer(strategy_name, backbone_name)
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, 10, (batch_size,)).astype("int32")
    for _ in range(2):
        model.train_on_batch(images, labels)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(images, labels)
        timings.append((time.perf_counter() - start) / steps)
    step = statistics.median(timings)
    forward = _training_forward_macs(network, image_size)
    return {"step_s": step, "images_per_s": batch_size / step, "forward_macs": forward,
            "gflops": forward * 2 * 3 * batch_size / step / 1e9}


def _training_forward_macs(network, image_size):
    """Forward multiply-adds of one image through the network in training mode (what a step computes)."""
    import bench.routed_latency as routed

    records = []
    with routed._recording_kernels(records):
        network(np.zeros((1, image_size, image_size, 3), "float32"), training=True)
    from models.transtailor.flops import layer_macs

    return int(sum(layer_macs(layer, shape_in, shape_out) for layer, shape_in, shape_out in records))


def make_folder_dataset(root, classes=4, per_class=40, side=128):
    """Random-noise JPEGs in class sub-folders (the layout `--data-dir` takes)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        folder = os.path.join(root, f"class_{c}")
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}.jpg"), quality=90)
    return root


def pipeline_images_per_second(data_dir, image_size, batch_size, batches, cache_dir):
    from pipelines.loader import load_dataset

    bundle = load_dataset("folder", data_dir=str(data_dir), cache_dir=cache_dir)
    ds = bundle.batches("train", batch_size, training=True, image_size=image_size, cache=False)
    iterator = iter(ds)
    next(iterator)  # the first batch pays for tracing and the prefetch fill
    count, start = 0, time.perf_counter()
    for _ in range(batches):
        try:
            images, _ = next(iterator)
        except StopIteration:
            iterator = iter(ds)
            images, _ = next(iterator)
        count += int(images.shape[0])
    return count / (time.perf_counter() - start), bundle


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="resnet20:32", help="backbone:size,... (e.g. resnet20:32,mobilenet_v2:64)")
    p.add_argument("--strategies", default="finetune,spottune")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--matmul-size", type=int, default=1024)
    p.add_argument("--pipeline-batches", type=int, default=20)
    p.add_argument("--data-dir", help="folder dataset for the input pipeline (default: ../shared/data/clothing-small or random JPEGs)")
    args = p.parse_args(argv)
    strategies = args.strategies.split(",")

    peak = matmul_peak_gflops(args.matmul_size)
    print(f"TensorFlow {tf.__version__}, {os.cpu_count()} CPU(s) visible, intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'default'}")
    print(f"peak: dense float32 matmul {args.matmul_size}x{args.matmul_size}, best of 5: {peak:.1f} GFLOP/s")
    print("GFLOP/s convention: forward multiply-adds (network as trained) x 2 x 3 (forward + backward) x images/s\n")
    header = f"{'backbone':<14}{'px':>4}{'strategy':>10}{'fwd M MACs':>12}{'s/step':>9}{'img/s':>9}{'GFLOP/s':>9}{'% peak':>8}{'/finetune':>11}"
    print(header)
    print("-" * len(header))
    consumption = {}
    for backbone_name, size in parse_cases(args.cases):
        base = None
        for strategy_name in strategies:
            fig = training_figures(strategy_name, backbone_name, size, args.batch_size, args.steps, args.repeats)
            base = fig["step_s"] if strategy_name == "finetune" else base
            ratio = f"{fig['step_s'] / base:.2f}" if base else "-"
            print(f"{backbone_name:<14}{size:>4}{strategy_name:>10}{fig['forward_macs'] / 1e6:>12.1f}{fig['step_s']:>9.4f}"
                  f"{fig['images_per_s']:>9.1f}{fig['gflops']:>9.2f}{100 * fig['gflops'] / peak:>7.1f}%{ratio:>11}", flush=True)
            consumption[size] = max(consumption.get(size, 0.0), fig["images_per_s"])

    with tempfile.TemporaryDirectory(prefix="adaptune-pipeline-bench-") as tmp:
        data_dir = args.data_dir or (DEFAULT_DATA if DEFAULT_DATA.is_dir() else make_folder_dataset(os.path.join(tmp, "data")))
        print(f"\ninput pipeline alone (decode, resize, training augmentation, batch {args.batch_size}; no cache) on {os.path.normpath(data_dir)}:")
        for size, consumed in sorted(consumption.items()):
            rate, bundle = pipeline_images_per_second(data_dir, size, args.batch_size, args.pipeline_batches, os.path.join(tmp, "cache"))
            verdict = "met" if rate >= PIPELINE_GOAL * consumed else "NOT met"
            print(f"  {size} px: {rate:.1f} images/s ({bundle.policy} policy) vs fastest training consumption {consumed:.1f} images/s: "
                  f"{rate / consumed:.2f}x (goal >= {PIPELINE_GOAL:.0f}x: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
