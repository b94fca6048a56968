"""Training images per second for each backbone and strategy, side by side in one run.

    python -m bench.train_throughput [--backbones resnet20,resnet26] [--strategies finetune,linear,last_k]
                                     [--steps 10] [--batch-size 32]

Each cell trains `--steps` steps (after 2 warm-up steps that include graph tracing) on random
images at the backbone's default size (or --image-size) and reports images/s; the last column of
each row divides by the `finetune` figure of the same backbone, the comparison that matters on a
noisy machine. Weights are random: speed does not depend on them.
"""

import argparse
import time

import keras
import numpy as np

from models.backbones import BACKBONES, build_backbone
from models.strategies import StrategyOptions, get_strategy

CHEAP_SIZES = {"resnet50": 96, "mobilenet_v2": 96}


def images_per_second(model, batch_size, image_size, steps, num_classes=10):
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    labels = rng.integers(0, num_classes, (batch_size,)).astype("int32")
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for _ in range(2):
        model.train_on_batch(images, labels)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    return steps * batch_size / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbones", default="resnet20,resnet56,resnet26,squeezenet1_1")
    p.add_argument("--strategies", default="finetune,linear,last_k")
    p.add_argument("--k", type=int, default=3, help="k for last_k")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int)
    args = p.parse_args(argv)

    strategies = args.strategies.split(",")
    rows = []
    for name in args.backbones.split(","):
        if name not in BACKBONES:
            raise SystemExit(f"unknown backbone {name!r}; choose from {', '.join(sorted(BACKBONES))}")
        size = args.image_size or CHEAP_SIZES.get(name) or build_backbone(name, weights="none").default_image_size
        rates = {}
        for strategy_name in strategies:
            keras.utils.set_random_seed(0)
            backbone = build_backbone(name, weights="none")
            strategy = get_strategy(strategy_name)
            options = StrategyOptions(k=args.k if strategy.uses_k else None)
            strategy.check(options, len(backbone.blocks))
            normalization = {"mean": [0.5] * 3, "std": [0.25] * 3, "scale": 1 / 255}
            model = strategy.build(backbone, 10, normalization, options)
            rates[strategy_name] = images_per_second(model, args.batch_size, size, args.steps)
        rows.append((name, size, rates))

    header = f"{'backbone':<14}{'px':>5}" + "".join(f"{s + ' img/s':>16}" for s in strategies)
    if "finetune" in strategies:
        header += "".join(f"{s + '/finetune':>18}" for s in strategies if s != "finetune")
    print(header)
    for name, size, rates in rows:
        line = f"{name:<14}{size:>5}" + "".join(f"{rates[s]:>16.1f}" for s in strategies)
        if "finetune" in strategies:
            line += "".join(f"{rates[s] / rates['finetune']:>18.2f}" for s in strategies if s != "finetune")
        print(line)


if __name__ == "__main__":
    main()
