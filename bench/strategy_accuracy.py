"""Accuracy of the fine-tuning strategies from the same pretrained backbone, same data, same budget.

    python -m bench.strategy_accuracy [--epochs 10] [--k 3] [--datasets default,clothing-small]

Strategies: finetune, last_k, spottune, spottune_global, global_k (k = --k). Datasets: the
embedded default and ../shared/data/clothing-small (any `folder` path can be added as
NAME=PATH). One table, test accuracy (validation in brackets); global_k also shows its compact
model's test accuracy. Runs go to a temporary folder unless --out is given.
"""

import argparse
import os
import pathlib
import tempfile

from app.training import train
from rundir.config import TrainConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
KNOWN = {"default": (None, None), "clothing-small": ("folder", str(REPO.parent / "shared" / "data" / "clothing-small"))}
STRATEGIES = ("finetune", "last_k", "spottune", "spottune_global", "global_k")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="default,clothing-small")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--backbone", default="resnet20")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--image-size", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args(argv)
    root = args.out or tempfile.mkdtemp(prefix="adaptune-strategies-")
    rows = {}
    datasets = []
    for item in args.datasets.split(","):
        name, _, path = item.partition("=")
        dataset, data_dir = ("folder", path) if path else KNOWN[name]
        datasets.append(name)
        for strategy in args.strategies.split(","):
            config = TrainConfig(dataset=dataset, data_dir=data_dir, backbone=args.backbone, strategy=strategy,
                                 k=args.k if strategy in ("last_k", "global_k") else None, epochs=args.epochs,
                                 image_size=args.image_size, seed=args.seed,
                                 extra={"eval_splits": ["validation", "test"]})
            metrics = train(config, os.path.join(root, f"{name}-{strategy}"), verbose=0)
            rows[(name, strategy)] = metrics
    print(f"\n{args.backbone}, {args.epochs} epochs, k={args.k}: test accuracy (validation)")
    print(f"{'strategy':<18}" + "".join(f"{d:>24}" for d in datasets))
    for strategy in args.strategies.split(","):
        line = f"{strategy:<18}"
        for d in datasets:
            m = rows[(d, strategy)]
            cell = f"{m['accuracy']['test']:.4f} ({m['accuracy']['validation']:.4f})"
            line += f"{cell:>24}"
        print(line)
        if strategy == "global_k":
            line = f"{'  compact':<18}"
            for d in datasets:
                r = rows[(d, strategy)]["routing"]
                line += f"{r['compact_accuracy']['test']:.4f} blocks {r['finetuned_blocks']}".rjust(24)
            print(line)


if __name__ == "__main__":
    main()
