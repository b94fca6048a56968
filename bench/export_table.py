"""Every export format by every quantisation, side by side: size, accuracy, agreement, latency.

    python -m bench.export_table [--run RUN_DIR ...] [--formats all] [--quantize all]
                                 [--max-images 500] [--threads 1] [--out DIR]

Without --run it first trains tiny runs on the embedded data (ResNet-20, pretrained, `--image-size`
32): `finetune` for `--epochs` epochs (2), and a `spottune` run of one epoch whose routed export
shows the batch-1 latency of per-image routing (conditional execution) against the plain backbone.
Each run is exported with `export.exporter.export_run` and the default agreement thresholds, so
the table shows what `python -m app.export` would ship: a file below its threshold is measured
but marked "R" (written as .rejected), and a routed file whose conditional graph failed shows the
both-copies fallback.

Latency is the median of batch-1 calls in one interpreter thread (LiteRT with XNNPACK,
onnxruntime CPU, TensorFlow for the SavedModel); on a busy machine compare within a column.
"""

import argparse
import os
import sys
import tempfile

from export.exporter import FORMATS, QUANTIZATIONS, ExportOptions, export_run, parse_list
from export.report import human_size


def make_run(root, strategy, epochs, image_size, k=None):
    from app.training import train
    from rundir.config import TrainConfig

    directory = os.path.join(root, strategy)
    config = TrainConfig(strategy=strategy, epochs=epochs, image_size=image_size, k=k, out=directory, warmup_epochs=0)
    print(f"training a tiny {strategy} run ({epochs} epoch(s), ResNet-20, {image_size} px) -> {directory}", file=sys.stderr, flush=True)
    train(config, directory, verbose=0)
    return directory


def pivot(report, formats, quantizations):
    """Rows: quantisation; one group of columns (size, accuracy, agreement, ms per image) per format."""
    rows = {(row["format"], row["quantize"]): row for row in report["files"]}
    groups = [fmt for fmt in formats if any(key[0] == fmt for key in rows)]
    sub = ("size", "acc", "agree", "ms")
    lines = []
    for quantize in quantizations:
        cells = [quantize]
        for fmt in groups:
            row = rows.get((fmt, quantize))
            if row is None or row.get("agreement") is None:
                cells += ["-"] * 4 if row is None else [row["status"], "-", "-", "-"]
                continue
            mark = " R" if row["status"] == "rejected" else ""
            cells += [human_size(row["size_bytes"]), f"{row['accuracy']:.3f}", f"{row['agreement']:.3f}{mark}", f"{row['latency_ms']:.3f}"]
        lines.append(cells)
    header = ["quantize"] + [column for _ in groups for column in sub]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    group_widths = [sum(widths[1 + 4 * g : 5 + 4 * g]) + 6 for g in range(len(groups))]
    title = " " * widths[0] + "  " + "  ".join(f"[{fmt}]".center(width) for fmt, width in zip(groups, group_widths))
    body = ["  ".join(str(cell).rjust(width) for cell, width in zip(line, widths)) for line in [header, *lines]]
    return [title, body[0], "-" * len(body[0]), *body[1:]]


def routed_lines(report):
    lines = []
    for row in report["files"]:
        if row.get("routing") and row.get("plain_latency_ms"):
            lines.append(
                f"  {row['file']:<24} routing {row['routing']:<11} {row['latency_ms']:.3f} ms   "
                f"both copies {row.get('both_latency_ms') or float('nan'):.3f} ms   plain backbone {row.get('plain_latency_ms') or float('nan'):.3f} ms   "
                f"ratio vs plain {row.get('latency_ratio') or float('nan'):.2f}x"
            )
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", help="run directory to export (repeatable); default: make tiny runs")
    p.add_argument("--formats", default="all")
    p.add_argument("--quantize", default="all")
    p.add_argument("--max-images", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--latency-runs", type=int, default=100)
    p.add_argument("--calibration-batches", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2, help="epochs of the tiny finetune run")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--no-spottune", action="store_true", help="without --run: skip the tiny spottune run")
    p.add_argument("--out", help="where the exported files go (default: a temporary directory)")
    args = p.parse_args(argv)

    formats = parse_list(args.formats, FORMATS, "format")
    quantizations = parse_list(args.quantize, QUANTIZATIONS, "quantization")
    with tempfile.TemporaryDirectory(prefix="adaptune-export-bench-") as tmp:
        out_root = args.out or tmp
        runs = args.run or [make_run(tmp, "finetune", args.epochs, args.image_size)]
        if not args.run and not args.no_spottune:
            runs.append(make_run(tmp, "spottune", 1, args.image_size))
        for run in runs:
            options = ExportOptions(
                formats=formats, quantize=quantizations, out=os.path.join(out_root, os.path.basename(os.path.normpath(run))),
                max_images=args.max_images, threads=args.threads, latency_runs=args.latency_runs,
                calibration_batches=args.calibration_batches,
            )
            report = export_run(run, options)
            verification = report["verification"]
            print(f"\n{report['run']}: {report['strategy']} {report['backbone']} ({report['exported']['kind']}), {report['image_size']} px, "
                  f"{verification['images']} {verification['split']} images, Keras accuracy {verification['keras_accuracy']:.3f}, "
                  f"{args.threads} thread(s)")
            for line in pivot(report, formats, quantizations):
                print("  " + line)
            routed = routed_lines(report)
            if routed:
                print("  batch-1 latency of per-image routing:")
                for line in routed:
                    print(line)
            notes = [f"  {row['file']}: {row['note']}" for row in report["files"] if row.get("note")]
            for line in notes:
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
