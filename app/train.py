"""python -m app.train: fine-tune a pretrained backbone on a dataset with one strategy.

Examples:
    python -m app.train                                   # embedded default data, ResNet-20
    python -m app.train --dataset folder --data-dir PATH --strategy last_k --k 3
    python -m app.train --resume runs/<run>               # continue an interrupted run
"""

import argparse
import dataclasses
import os
import shlex
import sys

from app.errors import one_line_errors
from app.recipes import apply_recipes
from app.regularization import EXTRA_FLAGS as REGULARIZATION_EXTRA_FLAGS
from app.regularization import add_regularization_flags, check_regularization
from models.errors import ModelConfigError
from rundir import layout as rd
from rundir.config import DISTRIBUTE, OPTIMIZERS, SCHEDULES, TrainConfig, json_type_name, read_settings

PROGRAM = "python -m app.train"
# With no backbone named, the best pretrained backbone available offline: MobileNetV2 from ImageNet
# (its weights are embedded in assets/weights), with its recipe (BatchNorm frozen, lr 0.001, new layers
# at 10x) and 96 px, the size measured best within 5 minutes on 2 cores on the embedded clothing photographs
# (README, "Quick start": 0.857 test against 0.761 for the CIFAR-10 ResNet-20 at 32 px). Decathlon tasks
# keep their own 72 px. The embedded default data (no --dataset) also gets 10 epochs. Any flag given wins;
# the library's TrainConfig defaults (ResNet-20, 20 epochs, lr 0.05) apply to the Python API.
DEFAULT_BACKBONE = {"backbone": "mobilenet_v2", "image_size": 96}
MAIN_JOB = {**DEFAULT_BACKBONE, "epochs": 10}
NORMALIZE = ("auto", "source", "dataset")


def build_parser():
    from models.strategies import STRATEGIES

    defaults = TrainConfig()
    p = argparse.ArgumentParser(prog=PROGRAM, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--dataset", help="a Visual Decathlon name (aircraft, cifar100, daimlerpedcls, dtd, gtsrb, imagenet12, omniglot, svhn, ucf101, vgg-flowers), 'folder', or omitted for the embedded default")
    data.add_argument("--data-dir", help="folder of images: class sub-folders (optionally inside train/validation/test), or the unpacked DTD archive")
    data.add_argument("--tfds-data-dir", help="TensorFlow Datasets data dir holding prepared visual_domain_decathlon data")
    data.add_argument("--image-size", type=int, help="training/evaluation size in pixels (default: 72 for Decathlon data, else the backbone's)")
    model = p.add_argument_group("model")
    model.add_argument("--backbone", help=f"registered backbone (default {defaults.backbone})")
    model.add_argument("--weights", help="'default' (the backbone's pretrained file), 'none' (random init), or a path (.npz, .h5, .pth, .weights.h5)")
    model.add_argument("--strategy", help=f"fine-tuning strategy (default {defaults.strategy})")
    model.add_argument("--k", type=int, help=f"number of blocks to fine-tune ({', '.join(name for name, s in STRATEGIES.items() if s.uses_k)})")
    model.add_argument("--bn", choices=("train", "frozen"), help="BatchNorm in the layers that train: 'train' (default) or 'frozen' (pretrained statistics kept)")
    model.add_argument("--dropout", type=float, help="dropout before the new classifier (default 0)")
    model.add_argument("--normalize", choices=NORMALIZE, help="input statistics: auto (default), source (the pretrained network's), dataset")
    add_strategy_flags(p)
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, help=f"epochs (default {defaults.epochs})")
    opt.add_argument("--batch-size", type=int, help=f"global batch size (default {defaults.batch_size})")
    opt.add_argument("--lr", type=float, help=f"peak learning rate (default {defaults.lr})")
    opt.add_argument("--head-lr-ratio", type=float, help="the new layers' learning rate (classifier, regressors) as a multiple of --lr, the pretrained layers' (default: the backbone's recipe, 10 for the ImageNet backbones, else 1)")
    opt.add_argument("--head-epochs", type=int, help="epochs at the start in which only the new layers train (head warm-start, as LP-FT; default 0, lp_ft: a third of --epochs)")
    opt.add_argument("--momentum", type=float, help=f"SGD momentum (default {defaults.momentum})")
    opt.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default {defaults.optimizer})")
    opt.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule: cosine with linear warm-up (default) or constant")
    opt.add_argument("--warmup-epochs", type=int, help=f"linear warm-up epochs (default {defaults.warmup_epochs})")
    opt.add_argument("--seed", type=int, help=f"random seed (default {defaults.seed})")
    run = p.add_argument_group("run")
    run.add_argument("--out", help="run directory (default: a new folder under runs/)")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last finished epoch (takes its config.json)")
    run.add_argument("--config", metavar="FILE", help="JSON file of settings (keys as the flags, e.g. from python -m app.tune); flags given here win")
    run.add_argument("--distribute", choices=DISTRIBUTE, help="tf.distribute strategy: none (default), mirrored, multiworker (reads TF_CONFIG)")
    run.add_argument("--workers", metavar="HOST:PORT,...", help="with --distribute multiworker: every worker's address, the same list on each (writes TF_CONFIG)")
    run.add_argument("--worker-index", type=int, metavar="I", help="this worker's place in --workers (0: the chief, which writes the run directory)")
    run.add_argument("--worker-dir", metavar="DIR", help="where a non-chief worker writes its own copy of the run (default: a fixed folder under the temp dir, removed at the end; DIR is kept)")
    run.add_argument("--virtual-cpus", type=int, help="split the CPU into N logical devices (to try --distribute mirrored without GPUs)")
    run.add_argument("--eval-splits", help="comma-separated splits to evaluate at the end (default: every labelled split)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    add_regularization_flags(p)
    return p


def add_strategy_flags(parser):
    """One argument group per strategy family, with the flags its strategies declare (`Strategy.flags`)."""
    from models.strategies import get_strategy, strategy_flags

    groups = {}
    for flag, users in strategy_flags():
        family = get_strategy(users[0]).family or users[0]
        if family not in groups:
            readers = [name for f, names in strategy_flags() if get_strategy(names[0]).family == family for name in names]
            groups[family] = parser.add_argument_group(f"{family} ({', '.join(dict.fromkeys(readers))})")
        kwargs = {"choices": flag.choices} if flag.choices else {"type": flag.type}
        groups[family].add_argument(flag.option, help=flag.help, **kwargs)
    return parser


def strategy_flag_names():
    from models.strategies import strategy_flags

    return tuple(flag.name for flag, _ in strategy_flags())


EXTRA_FLAGS = ("normalize", "eval_splits") + strategy_flag_names() + tuple(REGULARIZATION_EXTRA_FLAGS)


def config_from_args(args):
    """Merge, in increasing priority: TrainConfig defaults, --config FILE, explicit flags."""
    values = {}
    if args.config:
        if not os.path.isfile(args.config):
            raise ModelConfigError(f"--config {args.config} does not exist; pass a JSON file of settings")
        loaded = read_settings(args.config)
        if isinstance(loaded, dict) and isinstance(loaded.get("config"), dict):
            loaded = loaded["config"]  # a file written by python -m app.tune
        if not isinstance(loaded, dict):
            raise ModelConfigError(
                f"--config {args.config} holds a {json_type_name(loaded)}, not a JSON object of settings; write e.g. {{\"epochs\": 10, \"lr\": 0.01}}"
            )
        try:
            TrainConfig.from_dict(loaded)  # the file's own keys and types, named with the file
        except ModelConfigError as error:
            raise ModelConfigError(f"--config {args.config}: {error}") from None
        values.update(loaded)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    extra = dict(values.pop("extra", {}) or {})
    for name, value in vars(args).items():
        if value is None or name in ("config", "resume", "quiet"):
            continue
        if name in EXTRA_FLAGS:
            extra[name] = value.split(",") if name == "eval_splits" else value
        elif name in fields:
            values[name] = value
    for key, value in default_backbone_settings(values).items():
        values.setdefault(key, value)
    values["extra"] = extra
    config = TrainConfig.from_dict(values)
    return apply_recipes(config, explicit=set(values) | set(extra))


def default_backbone_settings(values):
    """What a run that names no backbone gets: the offline ImageNet MobileNetV2 and its image size
    (a Visual Decathlon task keeps its 72 px), and for the embedded default data 10 epochs."""
    if "backbone" in values:
        return {}
    if not any(key in values for key in ("dataset", "data_dir", "tfds_data_dir")):
        return dict(MAIN_JOB)  # the main job: the embedded data
    if values.get("dataset") not in (None, "folder", "dtd"):
        return {"backbone": DEFAULT_BACKBONE["backbone"]}  # a Decathlon task: its own resolution
    return dict(DEFAULT_BACKBONE)


def chosen_backbone_line(config, explicit):
    """One line saying which backbone and image size were chosen for the user ("" when they named one)."""
    if "backbone" in explicit:
        return ""
    from app.training import DECATHLON_IMAGE_SIZE

    size = config.image_size or DECATHLON_IMAGE_SIZE
    weights = "ImageNet weights" if str(config.weights).lower() == "default" else f"weights {config.weights}"
    return (
        f"backbone: {config.backbone} ({weights}, the best pretrained backbone available offline) at {size} px, "
        f"BatchNorm {config.bn}, lr {config.lr:g} (new layers x{config.head_lr_ratio:g}); choose others with --backbone and --image-size"
    )


def explicit_flags(args):
    return sorted(name for name, value in vars(args).items() if value not in (None, False) and name not in ("resume", "quiet", "workers", "worker_index", "worker_dir"))


def main(argv=None):
    args = build_parser().parse_args(argv)
    with one_line_errors(PROGRAM):
        from app import cluster

        cluster.apply_worker_flags(args.workers, args.worker_index)  # TF_CONFIG, before TensorFlow reads it
        if not args.resume:
            args.distribute = cluster.distribute_with_workers(args.distribute, args.workers)
        # Everything that needs no data first: the settings, then the run directory, writable and
        # locked for this process (a second process on it stops here with one line).
        if args.resume:
            args.resume = own_directory(args.resume, "multiworker" if os.environ.get("TF_CONFIG") else "none", given=args.worker_dir)
            rd.require_run(args.resume, rd.CONFIG_FILE)
            given = [f for f in explicit_flags(args) if f != "epochs"]
            if given:
                raise ModelConfigError(
                    f"--resume takes the settings from {args.resume}/config.json; drop --{given[0].replace('_', '-')} (only --epochs may change)"
                )
            run_directory = args.resume
            rd.check_writable(run_directory, "--resume")
        else:
            config = config_from_args(args)
            config.validate()
            line = chosen_backbone_line(config, set(explicit_flags(args)) | config_file_keys(args))
            if line:
                print(line, file=sys.stderr)
            check_regularization(config)
            check_distribute(config)
            run_directory = own_directory(config.out or rd.new_run_dir(config), config.distribute, fresh=True, given=args.worker_dir)
            rd.check_writable(run_directory, "--out", make_parents=not config.out)
            config.out = run_directory
        with rd.locked_run(run_directory, "--resume" if args.resume else "--out"):
            if args.resume:
                config = resumed_config(args)
            elif os.path.exists(rd.path(run_directory, rd.CONFIG_FILE)):
                raise ModelConfigError(
                    f"{run_directory} already holds a run; continue it with --resume {shlex.quote(run_directory)} or choose another --out"
                )
            return run(args, config, run_directory)


def config_file_keys(args):
    """The settings named in --config FILE (they count as given, like flags)."""
    if not args.config:
        return set()
    loaded = read_settings(args.config)
    if isinstance(loaded, dict) and isinstance(loaded.get("config"), dict):
        loaded = loaded["config"]
    return set(loaded) if isinstance(loaded, dict) else set()


def check_distribute(config, environ=os.environ):
    """--distribute multiworker needs the cluster (TF_CONFIG or --workers): one line naming the fix when it is missing or not JSON."""
    from app.cluster import check_multiworker

    check_multiworker(config.distribute, environ)


def resumed_config(args):
    """The config of the run `--resume` names (its --epochs changed when given); call it with the run locked."""
    config = TrainConfig.load(rd.path(args.resume, rd.CONFIG_FILE))
    if args.epochs is not None:
        config.epochs = args.epochs
    config.validate()
    check_regularization(config)
    check_distribute(config)
    if args.epochs is not None:
        config.save(rd.path(args.resume, rd.CONFIG_FILE))
    if os.path.exists(rd.path(args.resume, rd.METRICS_FILE)) and not os.path.isdir(rd.path(args.resume, rd.BACKUP_DIR)) and args.epochs is None:
        raise ModelConfigError(f"{args.resume} already finished; evaluate it with python -m app.evaluate --run {shlex.quote(args.resume)}")
    return config


def own_directory(run_directory, distribute, fresh=False, given=None):
    """Where this process writes: `run_directory`, or under multiworker on a non-chief worker its own directory."""
    from app.cluster import directory_of_this_process

    return directory_of_this_process(run_directory, distribute, fresh, given)


def run(args, config, run_directory):
    """Train `config` into the locked `run_directory` and print the summary table."""
    from app.devices import split_cpu

    split_cpu(config.virtual_cpus)
    from app.training import print_summary, train

    try:
        metrics = train(config, run_directory, resume=bool(args.resume), verbose=0 if args.quiet else 1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as error:  # a full disk, wherever it struck: one line, and how to go on
        if not rd.disk_full(error):
            raise
        where = f" (writing {error.filename})" if getattr(error, "filename", None) else ""
        raise rd.RunDirError(
            f"no space left on the device of {run_directory}{where}; every file there is the last complete one "
            f"and the checkpoint of the last finished epoch is kept: free some space, then continue with "
            f"python -m app.train --resume {shlex.quote(run_directory)}"
        ) from None
    rate = metrics["train_images_per_second"]
    print_summary(
        f"{config.strategy} on {config.dataset or 'default'} with {config.backbone}",
        metrics["accuracy"],
        metrics["images"],
        extra_lines=[
            f"training images/s: {rate:.1f}" if rate else "training images/s: n/a",
            f"trainable / total parameters: {metrics['trainable_parameters']:,} / {metrics['total_parameters']:,}",
            f"run directory: {run_directory}",
            f"TensorBoard: tensorboard --logdir {shlex.quote(rd.path(run_directory, rd.LOGS_DIR))}",
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
