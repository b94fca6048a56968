"""Batch-1 latency of a routed SpotTune file against the plain backbone, every interpreter side by side.

    python -m bench.routed_latency [--cases resnet20:32,resnet20:32:16,resnet20:32:8] [--runs 40]
                                   [--threads 1] [--calibration 16]

For each case (backbone : image size [: policy input size, the `--policy-image-size` flag]) it
builds a SpotTune network (random weights, `--weights none`: speed does not depend on them, and at
batch 1 the routed graph runs exactly one copy of every block whatever the policy picks), exports
with the project's export code (`export.exporter._Graphs`, the graphs `python -m app.export`
writes) the routed file (conditional execution, `export.graph.conditional_routed_function`), the plain
backbone classifier and the both-copies graph (every block computes both copies: what the
conditional graph must beat), converts both to LiteRT (TFLite) float32 and int8 and to ONNX
float32 and int8, and times them in turns in the same interpreter
(`export.verify.paired_latencies_ms`: median of `--runs` batch-1 calls, one thread). It prints the
routed / plain ratio per file and whether the issue's goal (at most 1.3x) is met, and the policy
network's multiply-adds against the backbone's (convolutions and dense layers, batch 1, counted
from the shapes of an eager forward pass).

int8 calibration uses `--calibration` random uint8 images: fine for timing, not for accuracy.
Add `mobilenet_v2:96` (or `mobilenet_v2:96:32`) to --cases for the MobileNetV2 case (slower to convert).
"""

import argparse
import contextlib
import os
import sys
import tempfile

import keras
import numpy as np

GOAL = 1.3
DEFAULT_CASES = "resnet20:32,resnet20:32:16,resnet20:32:8"
NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scale": 1 / 255}
JOBS = (("tflite", "none"), ("tflite", "int8"), ("onnx", "none"), ("onnx", "int8"))
EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx"}


def parse_cases(text):
    cases = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3):
            raise SystemExit(f"--cases: {item!r} is not backbone:size[:policy_size]")
        cases.append((parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None))
    return cases


@contextlib.contextmanager
def _recording_kernels(records):
    """Records (layer, input shape, output shape) of every Conv2D / DepthwiseConv2D / Dense call."""
    classes = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
    originals = {cls: cls.call for cls in classes}

    def wrap(cls):
        original = originals[cls]

        def call(self, inputs, *args, **kwargs):
            outputs = original(self, inputs, *args, **kwargs)
            records.append((self, tuple(inputs.shape), tuple(outputs.shape)))
            return outputs

        return call

    for cls in classes:
        cls.call = wrap(cls)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.call = original


def macs(layer_or_model, input_shape):
    """Multiply-adds of one image through `layer_or_model` (convolutions and dense layers)."""
    from models.transtailor.flops import layer_macs

    records = []
    with _recording_kernels(records):
        layer_or_model(np.zeros((1, *input_shape[1:]), "float32"), training=False)
    seen, total = set(), 0
    for layer, shape_in, shape_out in records:
        key = (id(layer), shape_in)
        if key in seen:  # a layer called twice on the same input (none here; safety)
            continue
        seen.add(key)
        total += layer_macs(layer, shape_in, shape_out)
    return total


def build_spottune(backbone_name, image_size, policy_image_size):
    from models.backbones import build_backbone
    from models.strategies import StrategyOptions, get_strategy

    keras.utils.set_random_seed(0)
    backbone = build_backbone(backbone_name, weights="none")
    strategy = get_strategy("spottune")
    options = StrategyOptions(extra={"policy_image_size": policy_image_size})
    network = strategy.build(backbone, 10, NORM, options)
    network(np.zeros((1, image_size, image_size, 3), "float32"), training=False)
    return network


def measure_case(backbone_name, image_size, policy_image_size, runs, threads, calibration_count, workdir):
    from export import verify
    from export.compact import ExportSource
    from export.exporter import _Graphs
    from models.spottune.classifier import POLICY_NAME

    model = build_spottune(backbone_name, image_size, policy_image_size)
    source = ExportSource(model=model, kind="routed", origin="bench.routed_latency (random weights)")
    graphs = _Graphs(source, image_size, "conditional", workdir)
    rng = np.random.default_rng(0)
    calibration_set = rng.integers(0, 256, (calibration_count, image_size, image_size, 3), dtype=np.uint8)
    calibration = verify.single_images(calibration_set)
    image = calibration_set[:1]

    plain_model = graphs.models["plain"][0]
    shape = (1, image_size, image_size, 3)
    policy_macs = macs(model.get_layer(POLICY_NAME), shape)
    plain_macs = macs(plain_model, shape)

    rows = []
    for fmt, quantize in JOBS:
        row = {"format": fmt, "quantize": quantize}
        try:
            runners = {}
            for key in ("model", "plain", "both"):
                path = os.path.join(workdir, f"{key}_{quantize}{EXTENSIONS[fmt]}")
                graphs.write(key, fmt, quantize, path, calibration if quantize == "int8" else None)
                runners[key] = verify.runner_for(path, threads)
            row["control_flow"] = graphs.control_flow.get("model")
            latencies = verify.paired_latencies_ms(runners, image, runs)
            row.update(routed_ms=latencies["model"], plain_ms=latencies["plain"], both_ms=latencies["both"],
                       ratio=latencies["model"] / latencies["plain"])
        except Exception as error:  # a converter / interpreter failure is a figure too
            row["error"] = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        rows.append(row)
    return {"backbone": backbone_name, "image_size": image_size, "policy_image_size": policy_image_size,
            "policy_macs": policy_macs, "plain_macs": plain_macs, "rows": rows}


def format_case(case):
    policy = case["policy_image_size"] or case["image_size"]
    lines = [
        f"{case['backbone']} {case['image_size']} px, policy at {policy} px: policy {case['policy_macs'] / 1e6:.1f} M multiply-adds, "
        f"plain backbone {case['plain_macs'] / 1e6:.1f} M (policy / backbone {case['policy_macs'] / case['plain_macs']:.2f}; "
        f"routed at batch 1 = backbone + policy = {(case['plain_macs'] + case['policy_macs']) / case['plain_macs']:.2f}x the backbone's multiply-adds)"
    ]
    header = f"  {'file':<16}{'routed ms':>11}{'plain ms':>10}{'both copies ms':>16}{'routed/plain':>14}  goal <= {GOAL}x"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for row in case["rows"]:
        name = f"{row['format']} {'float32' if row['quantize'] == 'none' else row['quantize']}"
        if "error" in row:
            lines.append(f"  {name:<16}{'failed: ' + row['error']}")
            continue
        verdict = "met" if row["ratio"] <= GOAL else "NOT met"
        routing = "" if row.get("control_flow") else " (both copies)"
        lines.append(f"  {name:<16}{row['routed_ms']:>11.3f}{row['plain_ms']:>10.3f}{row['both_ms']:>16.3f}{row['ratio']:>13.2f}x  {verdict}{routing}")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"backbone:size[:policy_size],... (default {DEFAULT_CASES})")
    p.add_argument("--runs", type=int, default=40, help="timed batch-1 calls per file (default 40)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calibration", type=int, default=16, help="random uint8 images for int8 calibration (default 16)")
    args = p.parse_args(argv)

    from export.host import describe, host_cpu

    print(f"batch-1 median of {args.runs} calls, {args.threads} interpreter thread(s), routed and plain timed in turns; host: {describe(host_cpu())}")
    summary = []
    for backbone_name, size, policy_size in parse_cases(args.cases):
        with tempfile.TemporaryDirectory(prefix="adaptune-routed-bench-") as workdir:
            case = measure_case(backbone_name, size, policy_size, args.runs, args.threads, args.calibration, workdir)
        print()
        for line in format_case(case):
            print(line, flush=True)
        summary.append(case)
    print("\nrouted / plain at batch 1 (goal <= 1.3x):")
    print(f"  {'case':<28}" + "".join(f"{f + ' ' + ('f32' if q == 'none' else q):>14}" for f, q in JOBS))
    for case in summary:
        label = f"{case['backbone']} {case['image_size']}px policy {case['policy_image_size'] or case['image_size']}px"
        cells = [f"{row['ratio']:.2f}x" + ("" if row["ratio"] <= GOAL else "!") if "ratio" in row else "failed" for row in case["rows"]]
        print(f"  {label:<28}" + "".join(f"{c:>14}" for c in cells))
    print("  ('!' = above the 1.3x goal)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
