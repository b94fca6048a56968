"""python -m app.compare: several methods from the same pretrained backbone, data and budget, side by side.

Every cell of the grid (method x training fraction x seed, or task x method x seed with
--decathlon) is one ordinary run directory under OUT/cells/, trained by the same code as
`python -m app.train`. A finished cell (metrics.json there) is read, not re-run; an interrupted one
resumes from its last finished epoch, so the whole comparison can be stopped and restarted.

Examples:
    python -m app.compare --backbone mobilenet_v2 --dataset folder --data-dir ../shared/data/clothing-small \\
        --image-size 128 --epochs 3 --methods finetune,linear,last_k,l2sp --seeds 0,1,2 --fractions 1,0.1 \\
        --out runs/compare-clothing
    python -m app.compare --decathlon --tfds-data-dir ~/tensorflow_datasets --backbone resnet26 \\
        --weights PATH.pth --methods finetune,spottune --out runs/compare-decathlon

A method is a strategy (finetune, linear, last_k, spottune, ...), a regulariser (l2, l2sp,
l2sp_fisher, l1sp, gl_sp, delta: trained with finetune), or both joined by '+' (spottune+l2sp),
optionally followed by settings of its own after ':' (linear:lr=0.01, l2sp:alpha=0.01:beta=0.01),
which win over the shared ones for that method only.
Writes OUT/results.md, OUT/results.csv and OUT/results.png (mean test accuracy with one standard
deviation as error bars), OUT/cells.csv (one row per cell: method, fraction, seed, accuracies), and
prints the table.
"""

import argparse
import dataclasses
import os
import re
import sys

from app import run_dir as rd
from app.config import TrainConfig
from app.errors import one_line_errors
from models.errors import ModelConfigError

PROGRAM = "python -m app.compare"
RESULTS = "results"
CELLS = "cells.csv"
DEFAULT_K = 3
DECATHLON_TASKS = (
    "aircraft", "cifar100", "daimlerpedcls", "dtd", "gtsrb", "imagenet12", "omniglot", "svhn", "ucf101", "vgg-flowers",
)


@dataclasses.dataclass(frozen=True)
class Method:
    """One row of the comparison: a strategy with an optional regulariser."""

    strategy: str
    regularizer: str = "none"
    settings: tuple = ()  # ((key, value), ...) for this method only

    @property
    def label(self):
        if self.regularizer == "none":
            name = self.strategy
        else:
            name = self.regularizer if self.strategy == TrainConfig.strategy else f"{self.strategy}+{self.regularizer}"
        return name + "".join(f":{key}={value}" for key, value in self.settings)


def parse_methods(text):
    """'finetune,l2sp,spottune+l2sp' -> [Method, ...]; one-line error on an unknown name."""
    from models.regularizers import REGULARIZERS
    from models.strategies import STRATEGIES

    methods = []
    for token in (t.strip() for t in text.split(",") if t.strip()):
        strategy, regularizer = TrainConfig.strategy, "none"  # a regulariser alone trains with the default strategy
        name, *assignments = token.split(":")
        settings = []
        for assignment in assignments:
            key, sep, value = assignment.partition("=")
            if not sep or not key:
                raise ModelConfigError(f"method {token!r}: settings after ':' are KEY=VALUE, e.g. linear:lr=0.01")
            settings.append((key.strip().replace("-", "_"), _value(value.strip())))
        for part in name.split("+"):
            if part in STRATEGIES:
                strategy = part
            elif part in REGULARIZERS and part != "none":
                regularizer = part
            else:
                raise ModelConfigError(
                    f"unknown method {part!r} in --methods; use strategies ({', '.join(sorted(STRATEGIES))}) "
                    f"or regularisers ({', '.join(r for r in REGULARIZERS if r != 'none')}), joined by '+'"
                )
        methods.append(Method(strategy, regularizer, tuple(settings)))
    if not methods:
        raise ModelConfigError("--methods is empty; pass e.g. --methods finetune,linear,l2sp")
    return methods


def parse_numbers(text, kind, flag):
    try:
        values = [kind(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ModelConfigError(f"{flag} takes a comma list of numbers, got {text!r}") from None
    if not values:
        raise ModelConfigError(f"{flag} is empty")
    return values


def build_parser():
    p = argparse.ArgumentParser(prog=PROGRAM, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default="finetune,linear,last_k", help="comma list of methods (see above)")
    p.add_argument("--seeds", default="0", help="comma list of seeds (default 0)")
    p.add_argument("--fractions", default="1", help="comma list of training-set fractions (default 1)")
    p.add_argument("--out", help="folder of the comparison (its cells/ and results.*); required unless --from-cells")
    p.add_argument("--decathlon", action="store_true", help="run every method on each prepared Visual Decathlon task and print the Decathlon score")
    p.add_argument("--tasks", help="with --decathlon: comma list of tasks (default: all ten)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--table-only", action="store_true", help="train nothing: the table of the cells finished so far (the others are listed as missing)")
    p.add_argument("--from-cells", metavar="CELLS.csv", help="train nothing: write the table of a cells.csv (e.g. a committed docs/evidence/*.csv) to the .md beside it")
    base = p.add_argument_group("settings shared by every cell (as in python -m app.train)")
    for flag, kind in (
        ("--backbone", str), ("--weights", str), ("--dataset", str), ("--data-dir", str), ("--tfds-data-dir", str),
        ("--image-size", int), ("--epochs", int), ("--batch-size", int), ("--lr", float), ("--optimizer", str),
        ("--bn", str), ("--k", int), ("--warmup-epochs", int), ("--head-lr-ratio", float), ("--head-epochs", int),
    ):
        base.add_argument(flag, type=kind)
    base.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="any other training setting, e.g. --set alpha=0.01 --set tau=5 (repeatable)")
    return p


def _value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def base_values(args):
    """The TrainConfig fields and extra settings shared by every cell."""
    values = {}
    for name in ("backbone", "weights", "dataset", "data_dir", "tfds_data_dir", "image_size", "epochs", "batch_size",
                 "lr", "optimizer", "bn", "warmup_epochs", "head_lr_ratio", "head_epochs"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    extra = {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for item in args.set:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ModelConfigError(f"--set takes KEY=VALUE, got {item!r}")
        key = key.strip().replace("-", "_")
        value = text.strip().split(",") if key == "eval_splits" else _value(text.strip())
        (values if key in fields else extra)[key] = value
    from app.train import DEFAULT_BACKBONE, default_backbone_settings

    # As app.train: the offline ImageNet MobileNetV2 where no backbone is named (Decathlon tasks keep 72 px).
    chosen = {"backbone": DEFAULT_BACKBONE["backbone"]} if getattr(args, "decathlon", False) else default_backbone_settings(values)
    for key, value in chosen.items():
        values.setdefault(key, value)
    values["extra"] = extra
    return values


def cell_config(base, method, seed, fraction, k, task=None):
    """The TrainConfig of one cell."""
    from app.recipes import apply_recipes

    values = {**base, "extra": dict(base.get("extra", {}))}
    values.update(strategy=method.strategy, regularizer=method.regularizer, seed=int(seed))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in method.settings:
        (values if key in fields else values["extra"])[key] = value
    from models.strategies import get_strategy

    if get_strategy(method.strategy).uses_k:
        values["k"] = int(k)
    if fraction < 1.0:
        values["extra"]["train_fraction"] = float(fraction)
    if task is not None:
        values["dataset"] = task
    config = TrainConfig.from_dict(values)
    return apply_recipes(config, explicit=set(values) | set(values["extra"]))


def cell_directory(out, method, seed, fraction, task=None):
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{method.label}-f{fraction:g}-s{seed}".replace("+", "_plus_"))
    return os.path.join(out, "cells", *([task] if task else []), name)


def run_cell(config, directory, verbose):
    """metrics.json of a finished cell; trains (or resumes) the cell first when needed."""
    from app.regularization import check_regularization
    from app.training import train

    if os.path.isfile(rd.path(directory, rd.METRICS_FILE)):
        return rd.read_json(directory, rd.METRICS_FILE), "done before"
    resume = os.path.isdir(rd.path(directory, rd.BACKUP_DIR)) and os.path.isfile(rd.path(directory, rd.CONFIG_FILE))
    if resume:
        config = TrainConfig.load(rd.path(directory, rd.CONFIG_FILE))
    config.out = directory
    config.validate()
    check_regularization(config)
    return train(config, directory, resume=resume, verbose=verbose), "resumed" if resume else "trained"


def exported_size(directory):
    """Bytes of the network `app.export` would take: compact.keras when the run has one, else model.keras."""
    for name in ("compact.keras", rd.MODEL_FILE):
        file = rd.path(directory, name)
        if os.path.isfile(file):
            return os.path.getsize(file)
    return None


def score_split(metrics):
    accuracy = metrics["accuracy"]
    for split in ("test", "validation", "train"):
        if split in accuracy:
            return split, accuracy[split]
    raise ModelConfigError("a cell's metrics.json holds no accuracy")


def validation_beside(metrics, split):
    """The validation accuracy of a cell scored on another split (test), else None: a second opinion in the table."""
    value = metrics["accuracy"].get("validation")
    return float(value) if value is not None and split != "validation" else None


def last_epoch_train_accuracy(metrics):
    """The training accuracy `fit` logged in the last epoch (None when the history has none): has training levelled off?"""
    values = (metrics.get("history") or {}).get("accuracy") or []
    return float(values[-1]) if values and values[-1] is not None else None


def read_cells(path):
    """The rows of a cells.csv that `main` wrote, with their types back (empty fields: None)."""
    import csv

    kinds = {"fraction": float, "seed": int, "accuracy": float, "validation": float, "trainable_parameters": int,
             "images_per_second": float, "exported_bytes": int, "train_accuracy_last_epoch": float}
    rows = []
    try:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                rows.append({key: (kinds[key](value) if key in kinds else value) if value != "" else None for key, value in row.items()})
    except OSError as error:
        raise ModelConfigError(f"--from-cells {path} cannot be read ({error.strerror}); pass a cells.csv that python -m app.compare wrote") from None
    except (ValueError, KeyError, TypeError):
        raise ModelConfigError(f"--from-cells {path} is not a cells.csv of python -m app.compare (a value of the wrong type); pass one it wrote") from None
    if not rows or "accuracy" not in rows[0]:
        raise ModelConfigError(f"--from-cells {path} holds no cells; pass a cells.csv that python -m app.compare wrote")
    return rows


def table_of_cells(path):
    """The markdown table of a cells.csv: what `--from-cells` writes beside it (and the evidence tests compare)."""
    return markdown(summarise(read_cells(path))) + "\n"


def summarise(rows):
    """Cells -> one line per (task, method, fraction): mean and std over seeds (validation too, where every cell has it)."""
    import numpy as np

    groups = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"], row["fraction"]), []).append(row)
    lines = []
    for (task, method, fraction), cells in groups.items():
        accuracy = np.array([c["accuracy"] for c in cells])
        validation = [c.get("validation") for c in cells]
        validation = np.array(validation) if all(v is not None for v in validation) else None
        lines.append({
            "task": task,
            "method": method,
            "fraction": fraction,
            "seeds": len(cells),
            "split": cells[0]["split"],
            "accuracy_mean": float(accuracy.mean()),
            "accuracy_std": float(accuracy.std(ddof=1)) if len(cells) > 1 else 0.0,
            "validation_mean": float(validation.mean()) if validation is not None else None,
            "validation_std": (float(validation.std(ddof=1)) if len(cells) > 1 else 0.0) if validation is not None else None,
            "trainable_parameters": cells[0]["trainable_parameters"],
            "images_per_second": float(np.mean([c["images_per_second"] or 0.0 for c in cells])),
            "exported_bytes": cells[0]["exported_bytes"],
            "train_accuracy_last_epoch": _mean_or_none([c.get("train_accuracy_last_epoch") for c in cells]),
        })
    return lines


def _mean_or_none(values):
    return float(sum(values) / len(values)) if values and all(v is not None for v in values) else None


def markdown(lines):
    with_train = all(line.get("train_accuracy_last_epoch") is not None for line in lines)
    header = (
        "| task | method | train fraction | seeds | accuracy (mean ± std) | split | validation (mean ± std) "
        "| trainable params | train images/s | exported .keras |" + (" train acc. (last epoch) |" if with_train else "")
    )
    out = [header, "|" + "---|" * (11 if with_train else 10)]
    for line in lines:
        size = f"{line['exported_bytes'] / 2**20:.1f} MB" if line["exported_bytes"] else "-"
        validation = (
            f"{100 * line['validation_mean']:.2f} ± {100 * line['validation_std']:.2f}"
            if line.get("validation_mean") is not None
            else "-"
        )
        out.append(
            f"| {line['task'] or '-'} | {line['method']} | {line['fraction']:g} | {line['seeds']} | "
            f"{100 * line['accuracy_mean']:.2f} ± {100 * line['accuracy_std']:.2f} | {line['split']} | {validation} | "
            f"{line['trainable_parameters']:,} | {line['images_per_second']:.1f} | {size} |"
            + (f" {100 * line['train_accuracy_last_epoch']:.1f} |" if with_train else "")
        )
    return "\n".join(out)


def write_csv(path, lines):
    import csv

    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)
    os.replace(path + ".tmp", path)


def plot(path, lines):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = sorted({(line["task"], line["fraction"]) for line in lines}, key=lambda g: (str(g[0]), -g[1]))
    methods = list(dict.fromkeys(line["method"] for line in lines))
    width = 0.8 / max(1, len(groups))
    figure, axis = plt.subplots(figsize=(max(6, 0.7 * len(methods) * max(1, len(groups)) + 2), 4))
    for i, group in enumerate(groups):
        by_method = {line["method"]: line for line in lines if (line["task"], line["fraction"]) == group}
        means = [100 * by_method[m]["accuracy_mean"] if m in by_method else np.nan for m in methods]
        stds = [100 * by_method[m]["accuracy_std"] if m in by_method else 0 for m in methods]
        label = (f"{group[0]} " if group[0] else "") + f"{group[1]:g} of train"
        axis.bar(np.arange(len(methods)) + i * width, means, width, yerr=stds, capsize=3, label=label)
    axis.set_xticks(np.arange(len(methods)) + width * (len(groups) - 1) / 2, methods, rotation=30, ha="right")
    axis.set_ylabel("accuracy (%)")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def decathlon_lines(lines):
    """Per method: the Decathlon score of its mean accuracies, over the tasks it was run on."""
    from pipelines.decathlon_score import decathlon_score

    scores = {}
    for line in lines:
        if line["task"]:
            scores.setdefault(line["method"], {})[line["task"]] = 100 * line["accuracy_mean"]
    return {method: (decathlon_score(tasks), sorted(tasks)) for method, tasks in scores.items()}


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.from_cells:
        with one_line_errors(PROGRAM):
            table = table_of_cells(args.from_cells)
            target = os.path.splitext(args.from_cells)[0] + ".md"
            with open(target + ".tmp", "w") as f:
                f.write(table)
            os.replace(target + ".tmp", target)
            print(table + f"\nwritten: {target}")
        return 0
    if not args.out:
        parser.error("--out is required (the folder of the comparison), unless --from-cells")
    with one_line_errors(PROGRAM):
        methods = parse_methods(args.methods)
        seeds = parse_numbers(args.seeds, int, "--seeds")
        fractions = parse_numbers(args.fractions, float, "--fractions")
        if any(not 0.0 < f <= 1.0 for f in fractions):
            raise ModelConfigError(f"--fractions must lie in (0, 1], got {args.fractions}")
        tasks = [None]
        if args.decathlon:
            tasks = [t.strip() for t in (args.tasks or ",".join(DECATHLON_TASKS)).split(",") if t.strip()]
            unknown = [t for t in tasks if t not in DECATHLON_TASKS]
            if unknown:
                raise ModelConfigError(f"unknown Decathlon task {unknown[0]!r}; choose from {', '.join(DECATHLON_TASKS)}")
        base = base_values(args)
        k = args.k or DEFAULT_K
        os.makedirs(args.out, exist_ok=True)
        configs = [
            (task, method, fraction, seed, cell_config(base, method, seed, fraction, k, task))
            # seeds before methods: an interrupted comparison has every method at the same number of seeds
            for task in tasks for fraction in fractions for seed in seeds for method in methods
        ]
        rows, failed, missing = [], [], []
        for number, (task, method, fraction, seed, config) in enumerate(configs, 1):
            directory = cell_directory(args.out, method, seed, fraction, task)
            if args.table_only and not os.path.isfile(rd.path(directory, rd.METRICS_FILE)):
                missing.append(directory)
                continue
            try:
                metrics, how = run_cell(config, directory, verbose=0 if args.quiet else 1)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # one failed cell must not end a comparison of hours
                message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                failed.append(f"{directory}: {type(error).__name__}: {message}")
                print(f"[{number}/{len(configs)}] {directory}: FAILED ({failed[-1]})", file=sys.stderr, flush=True)
                continue
            split, accuracy = score_split(metrics)
            rows.append({
                "task": task, "method": method.label, "fraction": fraction, "seed": seed, "split": split,
                "accuracy": accuracy, "validation": validation_beside(metrics, split),
                "trainable_parameters": metrics["trainable_parameters"],
                "images_per_second": metrics.get("train_images_per_second"), "exported_bytes": exported_size(directory),
                "train_accuracy_last_epoch": last_epoch_train_accuracy(metrics),
            })
            print(f"[{number}/{len(configs)}] {directory}: {split} accuracy {accuracy:.4f} ({how})", flush=True)
        if not rows:
            raise ModelConfigError(f"every cell failed; the first: {failed[0]}")
        lines = summarise(rows)
        table = markdown(lines)
        prefix = os.path.join(args.out, RESULTS)
        with open(prefix + ".md.tmp", "w") as f:
            f.write(table + "\n")
        os.replace(prefix + ".md.tmp", prefix + ".md")
        write_csv(prefix + ".csv", lines)
        write_csv(os.path.join(args.out, CELLS), rows)  # one row per cell: the table's inputs, for other summaries
        plot(prefix + ".png", lines)
        print("\n" + table)
        if args.decathlon:
            print("\nVisual Decathlon score (validation split; test labels are hidden):")
            for method, (score, scored) in decathlon_lines(lines).items():
                print(f"  {method}: {score:.0f} over {len(scored)} task(s): {', '.join(scored)}")
        print(f"\nwritten: {prefix}.md, {prefix}.csv, {prefix}.png, {os.path.join(args.out, CELLS)}")
        if missing:
            print(f"not finished yet, left out of the table: {len(missing)} cells ({', '.join(os.path.basename(m) for m in missing[:5])}{' ...' if len(missing) > 5 else ''})")
        for line in failed:
            print(f"{PROGRAM}: error: cell failed (rerun to retry it): {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
