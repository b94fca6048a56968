"""Accuracy of the pretrained backbone fine-tuned on the embedded default, against the same
network trained from random weights with the same budget, side by side in one run.

    python -m bench.pretrained_vs_scratch [--backbone resnet20] [--epochs 15] [--dataset ... --data-dir ...]

Both runs use the same data, strategy (finetune), schedule, epochs, image size and seed; only
`--weights` differs ("default" against "none"). Run directories go to a temporary folder unless
--out is given.
"""

import argparse
import os
import tempfile

from app.training import train
from rundir.config import TrainConfig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default=TrainConfig.backbone)
    p.add_argument("--dataset")
    p.add_argument("--data-dir")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--image-size", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for the two run directories (default: a temporary folder)")
    args = p.parse_args(argv)

    root = args.out or tempfile.mkdtemp(prefix="adaptune-bench-")
    results = {}
    for label, weights in (("pretrained", "default"), ("from scratch", "none")):
        config = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, backbone=args.backbone, weights=weights,
                             epochs=args.epochs, image_size=args.image_size, seed=args.seed,
                             extra={"eval_splits": ["validation", "test"]})
        run = os.path.join(root, label.replace(" ", "-"))
        results[label] = train(config, run, verbose=0)

    print(f"\n{args.backbone}, finetune, {args.epochs} epochs, dataset {args.dataset or 'default'}")
    print(f"{'weights':<14}{'validation':>12}{'test':>10}{'train img/s':>14}")
    for label, metrics in results.items():
        acc = metrics["accuracy"]
        print(f"{label:<14}{acc.get('validation', float('nan')):>12.4f}{acc.get('test', float('nan')):>10.4f}"
              f"{metrics['train_images_per_second']:>14.1f}")
    gain = results["pretrained"]["accuracy"]["test"] - results["from scratch"]["accuracy"]["test"]
    print(f"pretrained - scratch (test accuracy): {gain:+.4f}")


if __name__ == "__main__":
    main()
