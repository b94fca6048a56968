"""TransTailor's curve: FLOPs ratio against validation accuracy per round, and the batch-1 latency of the
exported pruned network against the unpruned fine-tuned one, in one run.

    python -m bench.transtailor_curve [--run RUN_DIR] [--threads 1] [--runs 50] [--target-ratio 0.5]

Without --run it first trains a tiny transtailor run on the embedded data (ResNet-20, pretrained, 32 px,
one epoch of fine-tuning, one scale epoch and one fine-tuning epoch per round). From the run directory it
prints the rounds (metrics.json["transtailor"]), then exports `finetuned.keras` (W_f, before any pruning)
and `model.keras` (the kept pruned network) to float32 TFLite and ONNX, checks each against Keras, and
times batch-1 calls of both in turns (one interpreter thread; medians). Test accuracy of both networks on
the run's test split (else validation) closes the table. Method page: docs/methods/transtailor.md.
"""

import argparse
import os
import sys
import tempfile

import numpy as np


def make_run(root, target_ratio, epochs=1):
    from app.training import train
    from rundir.config import TrainConfig

    directory = os.path.join(root, "transtailor")
    config = TrainConfig(strategy="transtailor", epochs=epochs, image_size=32, out=directory, warmup_epochs=0)
    config.extra["target_ratio"] = float(target_ratio)
    print(f"training a tiny transtailor run (ResNet-20, 32 px, target {target_ratio}) -> {directory}", file=sys.stderr, flush=True)
    train(config, directory, verbose=0)
    return directory


def curve_lines(rounds):
    lines = [f"{'round':>5}  {'MACs':>13}  {'ratio':>6}  {'parameters':>11}  {'val acc':>7}  kept"]
    for r in rounds:
        lines.append(
            f"{r['round']:>5}  {r['macs']:>13,}  {r['flops_ratio']:>6.3f}  {r['parameters']:>11,}  "
            f"{100 * r['validation_accuracy']:>6.2f}%  {'yes' if r.get('kept', True) else 'no (undone)'}"
        )
    return lines


def export_float(model, image_size, workdir, name):
    """{format: path} of the float32 TFLite and ONNX files of `model`."""
    from export import graph, onnx_export, tflite

    function, _ = graph.serving_function(model)
    saved = graph.write_saved_model(model, function, os.path.join(workdir, f"{name}_saved_model"), image_size)
    paths = {"tflite": os.path.join(workdir, f"{name}.tflite"), "onnx": os.path.join(workdir, f"{name}.onnx")}
    with open(paths["tflite"], "wb") as f:
        f.write(tflite.convert(saved, "none"))
    onnx_export.convert_saved_model(saved, paths["onnx"], image_size)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.transtailor_curve", description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a finished transtailor run directory (default: train a tiny one)")
    parser.add_argument("--target-ratio", type=float, default=0.5, help="target of the tiny run (default 0.5)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50, help="timed batch-1 calls per file (default 50)")
    parser.add_argument("--max-images", type=int, default=200, help="images checked against Keras (default 200)")
    args = parser.parse_args(argv)

    from app.training import evaluate_run_model
    from export.verify import keras_logits, paired_latencies_ms, run_all, runner_for, verification_images
    from models.transtailor.strategy import FINETUNED_FILE
    from rundir.data import load_data
    from rundir.run import load_keras_model, open_run

    with tempfile.TemporaryDirectory(prefix="adaptune-transtailor-") as workdir:
        directory = args.run or make_run(workdir, args.target_ratio)
        run = open_run(directory)
        report = run.metrics.get("transtailor") or {}
        if not report.get("rounds"):
            raise SystemExit(f"{directory} has no TransTailor rounds in metrics.json (a transtailor run?)")
        print(f"TransTailor rounds of {directory} ({run.config.backbone}, {report['image_size']} px, "
              f"accuracy on the {report['split']} split)")
        print("\n".join("  " + line for line in curve_lines(report["rounds"])))

        models = {"unpruned (W_f)": load_keras_model(run.path(FINETUNED_FILE)), "pruned": load_keras_model(run.path("model.keras"))}
        bundle = load_data(run.config)
        images, _, split = verification_images(bundle, run.image_size, args.max_images)
        test_split = "test" if "test" in bundle.split_sizes else "validation"
        runners, rows = {}, {}
        for name, model in models.items():
            paths = export_float(model, run.image_size, workdir, name.split()[0])
            reference = keras_logits(model, images)
            accuracy = evaluate_run_model(model, bundle, run.image_size, run.config.batch_size, [test_split])[0][test_split]
            rows[name] = {"params": int(model.count_params()), "accuracy": accuracy}
            for fmt, path in paths.items():
                runner = runner_for(path, args.threads)
                rows[name][f"{fmt}_diff"] = float(np.max(np.abs(run_all(runner, images) - reference)))
                rows[name][f"{fmt}_size"] = os.path.getsize(path)
                runners[(name, fmt)] = runner
        latency = paired_latencies_ms(runners, images[:1], runs=args.runs)
        print(f"\nexported float32, batch 1, {args.threads} thread(s), median of {args.runs} calls in turns; "
              f"max |diff| to Keras on {len(images)} {split} images")
        print(f"  {'network':<15}{'params':>11}{test_split + ' acc':>11}{'tflite ms':>11}{'onnx ms':>9}{'tflite diff':>13}{'onnx diff':>11}")
        for name, row in rows.items():
            print(
                f"  {name:<15}{row['params']:>11,}{100 * row['accuracy']:>10.2f}%{latency[(name, 'tflite')]:>11.3f}"
                f"{latency[(name, 'onnx')]:>9.3f}{row['tflite_diff']:>13.2e}{row['onnx_diff']:>11.2e}"
            )
        first, last = report["rounds"][0], [r for r in report["rounds"] if r.get("kept", True)][-1]
        print(f"\n  MACs {first['macs']:,} -> {last['macs']:,} ({last['flops_ratio']:.3f}); "
              f"TFLite latency ratio {latency[('pruned', 'tflite')] / latency[('unpruned (W_f)', 'tflite')]:.3f}, "
              f"ONNX {latency[('pruned', 'onnx')] / latency[('unpruned (W_f)', 'onnx')]:.3f}")


if __name__ == "__main__":
    main()
