"""Training step time of each regulariser against no regulariser, side by side in one run.

    python -m bench.penalty_overhead [--backbone resnet20] [--image-size 32] [--batch-size 64]
                                     [--steps 5] [--repeats 20] [--strategy finetune]
                                     [--regularizers none,l2,l2sp,l2sp_fisher,l1sp,gl_sp,gl_sp_fisher,delta]

Every regulariser gets its own freshly built network and trainer (`app.trainer.compile_trainer`, as app.train builds
them); their steps are timed in interleaved rounds (each round times `--steps` steps of every
regulariser in turn, after 3 warm-up steps that include tracing), so a slow phase of the machine
hits all of them; the table reports the median and the fastest round of each, and their ratios
to `none` (on a shared machine the fastest round is the steadier estimate of the intrinsic cost),
and the median CPU time per step (all threads of this process), which other processes disturb less. The Fisher
weights are random and DELTA's attention uniform (the step cost does not depend on their values;
their one-off estimation is timed separately by app.regularization and written to
regularization.json). Weights are random: speed does not depend on them.
"""

import argparse
import statistics
import time

import keras
import numpy as np

from app.trainer import compile_trainer
from models.backbones import build_backbone
from models.regularizers import REGULARIZERS, build_penalty_terms
from models.regularizers.parts import hook_layer_names
from models.regularizers.variables import keyed_variables, shared_variables
from models.strategies import StrategyOptions, get_strategy

NORMALIZATION = {"mean": [0.5] * 3, "std": [0.25] * 3, "scale": 1 / 255}


def make_trainer(name, backbone_name, strategy_name, k, num_classes=10):
    keras.utils.set_random_seed(0)
    backbone = build_backbone(backbone_name, weights="none")
    strategy = get_strategy(strategy_name)
    options = StrategyOptions(k=k if strategy.uses_k else None)
    strategy.check(options, len(backbone.blocks))
    network = strategy.build(backbone, num_classes, NORMALIZATION, options)
    rng = np.random.default_rng(0)
    fisher = {key: rng.uniform(0.5, 1.5, tuple(v.shape)).astype("float32") for key, v in keyed_variables(shared_variables(network, "kernels")).items()}
    hooks = hook_layer_names(backbone) if name == "delta" else None
    attention = None
    if hooks:
        attention = [np.full((network.get_layer(h).output.shape[-1],), 1.0 / network.get_layer(h).output.shape[-1], "float32") for h in hooks]
    terms = list(strategy.training_terms(network, options))
    terms += build_penalty_terms(name, network, fisher=fisher, attention=attention, hooks=hooks, exclude_parts=strategy.own_parts)
    return compile_trainer(strategy, network, options, terms, keras.optimizers.SGD(0.01, momentum=0.9))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet20")
    p.add_argument("--strategy", default="finetune")
    p.add_argument("--k", type=int, default=3, help="k for strategies that use it")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="steps per round")
    p.add_argument("--repeats", type=int, default=20, help="interleaved rounds")
    p.add_argument("--regularizers", default=",".join(REGULARIZERS))
    args = p.parse_args(argv)

    names = args.regularizers.split(",")
    if "none" not in names:
        names = ["none"] + names
    unknown = [n for n in names if n not in REGULARIZERS]
    if unknown:
        raise SystemExit(f"unknown regularizer {unknown[0]!r}; choose from {', '.join(REGULARIZERS)}")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch_size, args.image_size, args.image_size, 3)).astype("float32")
    labels = rng.integers(0, 10, (args.batch_size,)).astype("int32")
    trainers = {name: make_trainer(name, args.backbone, args.strategy, args.k) for name in names}
    for trainer in trainers.values():
        for _ in range(3):
            trainer.train_on_batch(images, labels)
    times = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for _ in range(args.repeats):
        for name, trainer in trainers.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                trainer.train_on_batch(images, labels)
            times[name].append((time.perf_counter() - start) / args.steps)
            cpu[name].append((time.process_time() - start_cpu) / args.steps)

    base, fastest = statistics.median(times["none"]), min(times["none"])
    print(f"{args.backbone} ({args.strategy}), {args.image_size} px, batch {args.batch_size}: {args.repeats} interleaved rounds x {args.steps} steps")
    base_cpu = statistics.median(cpu["none"])
    print(f"{'regularizer':<14}{'median ms':>11}{'vs none':>9}{'fastest ms':>12}{'vs none':>9}{'CPU ms':>10}{'vs none':>9}")
    for name in names:
        median, best, work = statistics.median(times[name]), min(times[name]), statistics.median(cpu[name])
        print(
            f"{name:<14}{1000 * median:>11.1f}{median / base:>9.3f}{1000 * best:>12.1f}{best / fastest:>9.3f}"
            f"{1000 * work:>10.1f}{work / base_cpu:>9.3f}"
        )


if __name__ == "__main__":
    main()
