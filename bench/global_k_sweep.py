"""The sweep behind the default global-k loss weights, printed as one table.

    python -m bench.global_k_sweep [--epochs 10] [--k 3]

For each (count_weight l1, binarize_weight l2) on a small grid, trains `global_k` from the
pretrained ResNet-20 on the embedded default and reports: the number of blocks whose learned
decision is "fine-tuned" before any forcing (the target is k), the final sum of v_l, whether the
top-k had to be forced, and the validation and test accuracy of the compact model.
"""

import argparse
import itertools
import os
import tempfile

from app.training import train
from rundir.config import TrainConfig


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--count-weights", default="0.1,1,10")
    p.add_argument("--binarize-weights", default="0,0.1,1")
    p.add_argument("--image-size", type=int)
    p.add_argument("--out")
    args = p.parse_args(argv)
    root = args.out or tempfile.mkdtemp(prefix="adaptune-globalk-")
    results = []
    for l1, l2 in itertools.product(map(float, args.count_weights.split(",")), map(float, args.binarize_weights.split(","))):
        config = TrainConfig(strategy="global_k", k=args.k, epochs=args.epochs, image_size=args.image_size,
                             extra={"count_weight": l1, "binarize_weight": l2, "eval_splits": ["validation", "test"]})
        metrics = train(config, os.path.join(root, f"l1-{l1}-l2-{l2}"), verbose=0)
        routing = metrics["routing"]
        results.append((l1, l2, routing))
    print(f"\nglobal_k, k={args.k}, {args.epochs} epochs, ResNet-20 pretrained, embedded default")
    print(f"{'l1 (count)':>11}{'l2 (binarize)':>15}{'learned k':>11}{'sum v':>8}{'forced':>8}{'val (compact)':>15}{'test (compact)':>16}  fine-tuned blocks")
    for l1, l2, r in results:
        learned = sum(1 for probability in r["policy_probabilities"] if probability > 0.5)
        print(f"{l1:>11g}{l2:>15g}{learned:>11}{sum(r['policy_probabilities']):>8.2f}{str(r['forced_top_k']):>8}"
              f"{r['compact_accuracy']['validation']:>15.4f}{r['compact_accuracy']['test']:>16.4f}  {r['finetuned_blocks']}")


if __name__ == "__main__":
    main()
