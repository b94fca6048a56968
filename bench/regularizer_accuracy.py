"""Test accuracy of each regulariser with 10 % and 100 % of the training images, as one table.

    python -m bench.regularizer_accuracy [--data-dir ../shared/data/clothing-small] [--backbone resnet20]
        [--regularizers l2,l2sp,l2sp_fisher,l1sp,gl_sp,delta] [--fractions 0.1,1.0] [--epochs 5]
        [--image-size 32] [--batch-size 64] [--lr 0.01] [--bn train] [--seeds 0] [--out runs/bench-regularizers]

Every cell fine-tunes the pretrained backbone (strategy finetune, the authors' default weights
of each regulariser) on a seeded, stratified share of the training images
(`TrainConfig.extra["train_fraction"]`, applied by `app.subsets.apply_train_fraction`) with the
trainer app.train uses, and reports the accuracy on the dataset's test split (never used for any
choice). Every fraction gets the same number of optimisation steps: `--epochs` is the number of
epochs over all the images, a fraction f trains for ceil(epochs / f) epochs. The direction to look for (Li et al., ICML 2018): L2-SP above L2, most with little data;
L1-SP, GL-SP and the Fisher variant no better than L2-SP. With a few epochs on CPU the differences
are small against seed noise: pass several --seeds for a mean.
"""

import argparse
import math
import os
import statistics
import sys
import time

import keras

from app.subsets import apply_train_fraction
from app.trainer import build_trainer
from app.training import accuracy_of, load_data
from rundir.config import TrainConfig


def run_cell(base, regularizer, fraction, seed, out):
    epochs = math.ceil(base.epochs / fraction - 1e-9)
    values = {**base.to_dict(), "regularizer": regularizer, "seed": seed, "epochs": epochs, "extra": {**base.extra, "train_fraction": fraction}}
    config = TrainConfig(**values)
    keras.utils.set_random_seed(seed)
    bundle = apply_train_fraction(config, load_data(config))
    run = os.path.join(out, f"{regularizer}-{fraction:g}-seed{seed}")
    training = build_trainer(config, bundle, run, cache_directory=os.path.join(out, f"cache-{fraction:g}-seed{seed}"), verbose=False)
    trainer, network, image_size = training.trainer, training.network, training.image_size
    train = bundle.batches("train", config.batch_size, training=True, image_size=image_size, seed=seed)
    started = time.perf_counter()
    trainer.fit(train, epochs=config.epochs, verbose=0, shuffle=False)
    seconds = time.perf_counter() - started
    test = bundle.batches("test", config.batch_size, training=False, image_size=image_size)
    accuracy, _ = accuracy_of(network, test)
    return accuracy, bundle.split_sizes["train"], seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "clothing-small"))
    p.add_argument("--backbone", default="resnet20")
    p.add_argument("--regularizers", default="l2,l2sp,l2sp_fisher,l1sp,gl_sp,delta")
    p.add_argument("--fractions", default="0.1,1.0")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--bn", choices=("train", "frozen"), default="train", help="BatchNorm of the trained layers (see app.train --bn)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--out", default=os.path.join("runs", "bench-regularizers"))
    args = p.parse_args(argv)

    base = TrainConfig(
        dataset="folder", data_dir=os.path.abspath(args.data_dir), backbone=args.backbone, strategy="finetune",
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, image_size=args.image_size, bn=args.bn,
        extra={"delta_head_epochs": 10, "delta_attention_batches": 4},
    )
    regularizers = args.regularizers.split(",")
    fractions = [float(f) for f in args.fractions.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    results, sizes = {}, {}
    for fraction in fractions:
        for regularizer in regularizers:
            scores = []
            for seed in seeds:
                accuracy, size, seconds = run_cell(base, regularizer, fraction, seed, args.out)
                scores.append(accuracy)
                sizes[fraction] = size
                print(f"  {regularizer:<13} {fraction:>5.0%} seed {seed}: test accuracy {accuracy:.4f} ({size} training images, {seconds:.0f} s)", flush=True)
            results[regularizer, fraction] = scores

    print(f"\n{args.backbone} fine-tuned on {os.path.basename(os.path.normpath(args.data_dir))}: test accuracy, "
          f"{args.epochs} epochs at 100 % (same steps for every fraction), {args.image_size} px, lr {args.lr}, "
          f"BatchNorm {args.bn}, seeds {args.seeds}")
    header = f"{'regularizer':<14}" + "".join(f"{f'{f:.0%} ({sizes[f]} img)':>20}" for f in fractions)
    print(header)
    for regularizer in regularizers:
        cells = []
        for fraction in fractions:
            scores = results[regularizer, fraction]
            spread = f" ±{statistics.stdev(scores):.3f}" if len(scores) > 1 else ""
            cells.append(f"{statistics.mean(scores):.4f}{spread}")
        print(f"{regularizer:<14}" + "".join(f"{c:>20}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
