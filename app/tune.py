"""python -m app.tune: search the regulariser weights, the learning rate (and k) with KerasTuner.

Every trial trains with the code of python -m app.train (same model, terms, optimiser), on a
seeded, stratified share of the training images, and is scored on the held-out rest
(--val-fraction, default 20 %); the dataset's validation and test splits are never used.
The search space (log scale; every value has a default, the first trial's):
    alpha, beta   around the regulariser's defaults (x1/100 .. x100), or --alpha-range / --beta-range
    lr            --lr / 30 .. --lr x 3 (at most 1), or --lr-range
    k             1 .. number of blocks, for strategies that use k (`Strategy.uses_k`)
Writes to --out: results.csv and results.md (one row per trial, best first), best_config.json
(train it on the full training split with python -m app.train --config FILE), and TensorBoard logs
with an HParams view (tensorboard --logdir OUT/logs).

Examples:
    python -m app.tune --regularizer l2sp --trials 10 --epochs 5 --out runs/tune-l2sp
    python -m app.tune --regularizer delta --tuner bayesian --trials 20 --search alpha,lr
    python -m app.train --config runs/tune-l2sp/best_config.json --out runs/l2sp-best

Distributed search (KerasTuner's chief/worker mode: the oracle runs on the chief, each worker asks
it for a trial, trains it and reports the score; `app.tune_cluster`):
    python -m app.tune --distributed --local-workers 2 --trials 8 --out runs/tune   # a chief and 2 workers here
    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python -m app.tune --distributed ...
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 python -m app.tune --distributed ...
"""

import argparse
import csv
import dataclasses
import os
import shlex
import sys

from app.errors import one_line_errors
from app.regularization import EXTRA_FLAGS as REGULARIZATION_FLAGS
from app.regularization import add_regularization_flags, settings_of
from models.errors import ModelConfigError

PROGRAM = "python -m app.tune"
TUNERS = ("random", "bayesian", "hyperband")
SEARCHABLE = ("alpha", "beta", "lr", "k")
OBJECTIVE = "val_accuracy"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
BEST_FILE = "best_config.json"
LOGS_DIR = "logs"
WORK_DIR = "work"


def build_parser():
    from app.train import build_parser as train_parser

    parser = train_parser()
    parser.prog = PROGRAM
    parser.description = __doc__
    add_regularization_flags(parser)
    search = parser.add_argument_group("search")
    search.add_argument("--tuner", choices=TUNERS, default="random", help="KerasTuner algorithm (default random)")
    search.add_argument("--trials", type=int, default=10, help="number of trials (default 10; hyperband: an upper bound)")
    search.add_argument("--val-fraction", type=float, default=0.2, help="share of the training images held out to score trials (default 0.2)")
    search.add_argument("--search", help=f"comma-separated hyper-parameters to search among {', '.join(SEARCHABLE)} (default: all that apply)")
    for name in ("alpha", "beta", "lr"):
        search.add_argument(f"--{name}-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help=f"log-scale range of {name}")
    search.add_argument("--distributed", action="store_true", help="KerasTuner's chief/worker mode: KERASTUNER_TUNER_ID (chief, tuner0, ...), KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT name this process and the chief")
    search.add_argument("--local-workers", type=int, metavar="N", help="with --distributed: start a chief and N workers on this machine (loopback) and wait for them")
    search.add_argument("--overwrite", action="store_true", help="start afresh when --out already holds a search (default: continue it)")
    return parser


def base_config(args):
    """The TrainConfig every trial starts from: app.train's merge of --config FILE and flags, plus regularisation extras."""
    from app.train import config_from_args

    config = config_from_args(args)
    for name in REGULARIZATION_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            config.extra[name] = value
    config.validate()
    settings_of(config)
    return config


def log_range(default, low=None, high=None, spread=100.0, ceiling=None):
    """(low, high) of a log-scale search around `default`, widened to contain it."""
    low = default / spread if low is None else float(low)
    high = default * spread if high is None else float(high)
    if ceiling is not None:
        high = min(high, ceiling)
    if not 0 < low < high:
        raise ModelConfigError(f"a log-scale range needs 0 < LOW < HIGH, got {low} {high}")
    return min(low, default), max(high, default)


def _hypermodel_class():
    import keras_tuner

    class TransferHyperModel(keras_tuner.HyperModel):
        """Builds and fits one trial: `base` with the trial's alpha, beta, lr and k.

        Every hyper-parameter has a default (the base configuration's value, or the regulariser's
        default), used when KerasTuner first builds the model to discover the space; tests pin
        values with `hp.Fixed`.
        """

        def __init__(self, base, bundle, searched, ranges, num_blocks, work_directory, verbose=0):
            super().__init__(name="adaptune")
            self.base = base
            self.bundle = bundle
            self.searched = tuple(searched)
            self.ranges = ranges
            self.num_blocks = int(num_blocks)
            self.work_directory = work_directory
            self.verbose = verbose
            self.image_size = None
            self.training = None  # the `app.trainer.Training` of the trial being built

        def values(self, hp):
            settings = settings_of(self.base)
            values = {}
            if "lr" in self.searched:
                low, high = self.ranges["lr"]
                values["lr"] = hp.Float("lr", low, high, sampling="log", default=self.base.lr)
            for name in ("alpha", "beta"):
                if name in self.searched:
                    low, high = self.ranges[name]
                    values[name] = hp.Float(name, low, high, sampling="log", default=settings[name])
            if "k" in self.searched:
                default = self.base.k if self.base.k is not None else max(1, self.num_blocks // 2)
                values["k"] = hp.Int("k", 1, self.num_blocks, default=default)
            return values

        def config_for(self, hp):
            config = dataclasses.replace(self.base, extra=dict(self.base.extra), **self.values(hp))
            config.validate()
            settings = settings_of(config)
            if settings["regularizer"] != "none":
                config.alpha, config.beta, config.penalize = settings["alpha"], settings["beta"], settings["penalize"]
            return config

        def build(self, hp):
            import keras

            from app.trainer import build_trainer

            config = self.config_for(hp)
            keras.utils.set_random_seed(config.seed)
            self.training = build_trainer(config, self.bundle, self.work_directory, verbose=bool(self.verbose))
            self.image_size = self.training.image_size
            return self.training.trainer

        def fit(self, hp, model, *args, **kwargs):
            config = self.config_for(hp)
            image_size = self.image_size or _image_size(config, self.bundle)
            train_data = self.bundle.batches("train", config.batch_size, training=True, image_size=image_size, seed=config.seed)
            validation_data = self.bundle.batches("validation", config.batch_size, training=False, image_size=image_size)
            callbacks = list(kwargs.get("callbacks", []))
            if self.training is not None and self.training.trainer is model:
                context = self.training.context(config, self.bundle, self.work_directory, validation_data, ["validation"])
                callbacks += self.training.strategy.callbacks(context)
            return model.fit(
                train_data,
                validation_data=validation_data,
                epochs=kwargs.get("epochs", config.epochs),
                initial_epoch=kwargs.get("initial_epoch", 0),
                callbacks=callbacks,
                verbose=kwargs.get("verbose", self.verbose),
                shuffle=False,
            )

    return TransferHyperModel


def _image_size(config, bundle):
    from app.training import resolve_image_size
    from models.backbones import build_backbone

    return resolve_image_size(config, bundle, build_backbone(config.backbone, weights="none"))


def make_tuner(name, hypermodel, trials, max_epochs, directory, seed, overwrite):
    """A KerasTuner tuner maximising the held-out accuracy."""
    import keras_tuner

    objective = keras_tuner.Objective(OBJECTIVE, direction="max")
    common = dict(objective=objective, seed=seed, directory=directory, project_name="search", overwrite=overwrite)
    if name == "random":
        return keras_tuner.RandomSearch(hypermodel, max_trials=trials, **common)
    if name == "bayesian":
        return keras_tuner.BayesianOptimization(hypermodel, max_trials=trials, num_initial_points=min(trials, 3), **common)
    tuner = keras_tuner.Hyperband(hypermodel, max_epochs=max(2, max_epochs), factor=3, hyperband_iterations=1, **common)
    tuner.oracle.max_trials = trials
    return tuner


def searched_names(args, base, uses_k):
    settings = settings_of(base)
    available = ["lr"]
    if settings["regularizer"] != "none":
        available = ["alpha", "beta", "lr"]
    if uses_k:
        available.append("k")
    if not args.search:
        return available
    requested = [s.strip() for s in args.search.split(",") if s.strip()]
    for name in requested:
        if name not in SEARCHABLE:
            raise ModelConfigError(f"--search {name!r} is not searchable; choose among {', '.join(SEARCHABLE)}")
        if name not in available:
            raise ModelConfigError(
                f"--search {name} does not apply here (regularizer {settings['regularizer']}, strategy {base.strategy}); searchable: {', '.join(available)}"
            )
    return requested


def write_hparams_config(logdir, ranges, searched, num_blocks):
    """The HParams experiment summary at the root of the TensorBoard logs (the per-trial sessions
    are written by KerasTuner's TensorBoard integration), so the HParams view lists the domains
    and the held-out accuracy."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams_api

    hparams = []
    for name in searched:
        if name == "k":
            hparams.append(hparams_api.HParam("k", hparams_api.IntInterval(1, int(num_blocks))))
        else:
            hparams.append(hparams_api.HParam(name, hparams_api.RealInterval(*map(float, ranges[name]))))
    metrics = [
        hparams_api.Metric("epoch_accuracy", group="validation", display_name="held-out accuracy"),
        hparams_api.Metric("epoch_loss", group="validation", display_name="held-out loss"),
        hparams_api.Metric("epoch_accuracy", group="train", display_name="training accuracy"),
    ]
    with tf.summary.create_file_writer(logdir).as_default():
        hparams_api.hparams_config(hparams=hparams, metrics=metrics)


def trial_rows(tuner, searched):
    """One dict per trial (best first): id, status, score and the hyper-parameter values."""
    rows = []
    for trial in tuner.oracle.trials.values():
        row = {"trial": trial.trial_id, "status": str(trial.status), OBJECTIVE: trial.score}
        for name in searched:
            row[name] = trial.hyperparameters.values.get(name)
        if "tuner/epochs" in trial.hyperparameters.values:
            row["epochs"] = trial.hyperparameters.values["tuner/epochs"]
        rows.append(row)
    rows.sort(key=lambda r: (r[OBJECTIVE] is None, -(r[OBJECTIVE] or 0.0)))
    return rows


def write_results(out, rows):
    """results.csv and results.md in `out`; returns their paths."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    csv_path, md_path = os.path.join(out, RESULTS_CSV), os.path.join(out, RESULTS_MD)
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)

    def cell(value):
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return csv_path, md_path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    with one_line_errors(PROGRAM):
        from app import tune_cluster

        if args.local_workers is not None:
            return tune_cluster.run_local(argv, args.local_workers, args.distributed)
        role = tune_cluster.role(args.distributed)  # "serial", "chief" or "worker"
        if args.resume:
            raise ModelConfigError("--resume belongs to python -m app.train; to continue a search, rerun app.tune with the same --out")
        if args.trials < 1:
            raise ModelConfigError(f"--trials must be at least 1, got {args.trials}")
        base = base_config(args)
        out = base.out or os.path.join("runs", f"tune-{base.dataset or 'default'}-{base.backbone}-{base.regularizer}")
        base.out = None
        os.makedirs(out, exist_ok=True)

        import keras

        from app.subsets import apply_train_fraction, carve_validation
        from app.training import check_backbone_name, load_data
        from models.backbones import build_backbone
        from models.strategies import get_strategy

        strategy = get_strategy(base.strategy)
        check_backbone_name(base.backbone)
        searched = searched_names(args, base, strategy.uses_k)
        settings = settings_of(base)
        ranges = {
            "alpha": log_range(settings["alpha"] or 1e-4, *(args.alpha_range or (None, None))),
            "beta": log_range(settings["beta"] or 1e-4, *(args.beta_range or (None, None))),
            "lr": log_range(base.lr, *(args.lr_range or (None, None)), spread=30.0, ceiling=1.0) if not args.lr_range else log_range(base.lr, *args.lr_range),
        }
        num_blocks = len(build_backbone(base.backbone, weights="none").blocks)
        keras.utils.set_random_seed(base.seed)
        bundle = carve_validation(apply_train_fraction(base, load_data(base)), args.val_fraction, base.seed)
        print(
            f"search: {args.tuner}, {args.trials} trials over {', '.join(searched)}; "
            f"{bundle.split_sizes['train']} training / {bundle.split_sizes['validation']} held-out images",
            flush=True,
        )
        work = tune_cluster.work_directory(os.path.join(out, WORK_DIR))  # each tuner its own (w0.npz, caches)
        hypermodel = _hypermodel_class()(base, bundle, searched, ranges, num_blocks, work, verbose=0 if args.quiet else 1)
        tuner = make_tuner(args.tuner, hypermodel, args.trials, base.epochs, out, base.seed, args.overwrite and role != "worker")
        tuner.search(callbacks=[keras.callbacks.TensorBoard(os.path.join(out, LOGS_DIR), update_freq="epoch", write_graph=False)], verbose=0 if args.quiet else 1)
        if role == "worker":  # the chief holds the oracle, and writes the results
            print(f"{tune_cluster.tuner_id()}: no trial left; the chief writes the results to {out}")
            return 0

        write_hparams_config(os.path.join(out, LOGS_DIR), ranges, searched, num_blocks)
        rows = trial_rows(tuner, searched)
        csv_path, md_path = write_results(out, rows)
        best_hp = tuner.get_best_hyperparameters(1)[0]
        best = hypermodel.config_for(best_hp)
        best.out = None
        from rundir import layout as rd

        rd.write_json(
            out,
            BEST_FILE,
            {
                "config": best.to_dict(),
                "search": {
                    "tuner": args.tuner,
                    "trials": len(rows),
                    "objective": f"{OBJECTIVE} on {args.val_fraction:.0%} of the training images held out (seed {base.seed})",
                    "best_score": rows[0][OBJECTIVE] if rows else None,
                    "searched": {name: best_hp.values.get(name) for name in searched},
                },
            },
        )
        with open(md_path) as f:
            print("\n" + f.read())
        print(f"results: {csv_path}, {md_path}")
        print(f"best configuration: {os.path.join(out, BEST_FILE)}  (python -m app.train --config {shlex.quote(os.path.join(out, BEST_FILE))})")
        print(f"TensorBoard HParams: tensorboard --logdir {shlex.quote(os.path.join(out, LOGS_DIR))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
