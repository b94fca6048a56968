"""Batch-1 latency of a routed SpotTune file against the plain backbone, every interpreter side by side.

    python -m bench.routed_latency [--cases resnet20:32,resnet20:32:16,resnet20:32:8,resnet20:32:stem]
                                   [--runs 40] [--threads 1] [--calibration 16]
                                   [--files tflite:none,tflite:int8,onnx:none,onnx:int8]

For each case (backbone : image size [: policy], the policy being the authors' network on the
image resized to that many pixels, the `--policy-image-size` flag, or `stem` for the light policy
on the stem's output, `--policy stem_features`) it builds a SpotTune network (random weights,
`--weights none`: speed does not depend on them, and at batch 1 the routed graph runs exactly one
copy of every block whatever the policy picks), exports with the project's export code
(`export.exporter._Graphs`, the graphs `python -m app.export` writes) the routed file (conditional
execution, `export.graph.conditional_routed_function`), the plain backbone classifier and the
both-copies graph (every block computes both copies: what the conditional graph must beat),
converts them to LiteRT (TFLite) float32 and int8 and to ONNX float32 and int8, and times them in
turns in the same interpreter (`export.verify.paired_latency_samples_ms`: `--runs` batch-1 calls,
one thread; the tables give the median, the summary also the fastest call, which other jobs on a
busy machine disturb least). It prints the routed / plain ratio per file and whether the issue's goal (at
most 1.3x) is met, and the policy network's multiply-adds against the backbone's (convolutions and
dense layers, batch 1, counted from the shapes of an eager forward pass).

Where the time goes (issue 14, task 2): every LiteRT file is also timed without the default
XNNPACK delegate (`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`: LiteRT's builtin kernels,
"noXNN"), and every ONNX file with onnxruntime's graph optimisation off (ORT_DISABLE_ALL, "noopt";
the default is ORT_ENABLE_ALL), in the same turns. Beside each file the bench prints its control
flow: LiteRT subgraphs and IF ops and the DELEGATE partitions XNNPACK made of the main graph;
ONNX If, Conv and Transpose nodes and nodes in all. The routed ONNX file is converted from its
TFLite file (tf2onnx cannot convert variables inside `tf.cond` from the SavedModel), the plain one
from the SavedModel, so the ONNX rows also time the plain backbone converted from its TFLite file
("plain via TFLite"): routed / that separates the If cost from the converter's.

int8 calibration uses `--calibration` random uint8 images: fine for timing, not for accuracy.
Add `mobilenet_v2:96` (or `mobilenet_v2:96:32`, `mobilenet_v2:96:stem`) to --cases for the
MobileNetV2 case (slower to convert).
"""

import argparse
import contextlib
import os
import struct
import sys
import tempfile

import keras
import numpy as np

GOAL = 1.3
STEM = "stem"
DEFAULT_CASES = "resnet20:32,resnet20:32:16,resnet20:32:8,resnet20:32:stem"
NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scale": 1 / 255}
JOBS = (("tflite", "none"), ("tflite", "int8"), ("onnx", "none"), ("onnx", "int8"))
EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx"}
SLOW_NAMES = {"tflite": "noXNN", "onnx": "noopt"}  # the same file without the interpreter's speed-up


def parse_files(text):
    """'tflite:none,onnx:int8' -> (("tflite", "none"), ("onnx", "int8")), in the order of JOBS."""
    wanted = {tuple(item.strip().split(":")) for item in text.split(",") if item.strip()}
    unknown = wanted - set(JOBS)
    if unknown or not wanted:
        raise SystemExit(f"--files: use some of {','.join(':'.join(job) for job in JOBS)}, got {text!r}")
    return tuple(job for job in JOBS if job in wanted)


def parse_cases(text):
    """'resnet20:32,resnet20:32:8,resnet20:32:stem' -> [(backbone, size, policy px | None | "stem")]."""
    cases = []
    for item in text.split(","):
        parts = item.strip().split(":")
        valid = len(parts) in (2, 3) and parts[1].isdigit() and (len(parts) == 2 or parts[2].isdigit() or parts[2] == STEM)
        if not valid:
            raise SystemExit(f"--cases: {item!r} is not backbone:size[:policy_size|stem]")
        policy = None if len(parts) == 2 else (STEM if parts[2] == STEM else int(parts[2]))
        cases.append((parts[0], int(parts[1]), policy))
    return cases


def policy_label(case):
    """'policy 8 px' or 'stem-feature policy'."""
    if case["policy"] == STEM:
        return "stem-feature policy"
    return f"policy {case['policy'] or case['image_size']} px"


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


def build_spottune(backbone_name, image_size, policy):
    """A SpotTune network built by the strategy, random weights; `policy`: a px size, None, or "stem"."""
    from models.backbones import build_backbone
    from models.strategies import StrategyOptions, get_strategy

    keras.utils.set_random_seed(0)
    backbone = build_backbone(backbone_name, weights="none")
    strategy = get_strategy("spottune")
    extra = {"policy": "stem_features"} if policy == STEM else {"policy_image_size": policy}
    network = strategy.build(backbone, 10, NORM, StrategyOptions(extra=extra))
    network(np.zeros((1, image_size, image_size, 3), "float32"), training=False)
    return network


def policy_macs(model, image_size):
    """Multiply-adds of the policy of `model` for one image, on the input it reads (image or stem output)."""
    from models.backbones.base import STEM_NAME
    from models.spottune.classifier import POLICY_NAME, reads_stem

    policy = model.get_layer(POLICY_NAME)
    shape = (1, image_size, image_size, 3)
    if reads_stem(policy):
        shape = tuple(model.get_layer(STEM_NAME)(np.zeros(shape, "float32"), training=False).shape)
    return macs(policy, shape)


# --- Structure of the files --------------------------------------------------------------------


def tflite_subgraph_count(data):
    """Subgraphs of a .tflite flatbuffer: the length of Model.subgraphs (the root table's third field)."""
    root = struct.unpack_from("<I", data, 0)[0]
    vtable = root - struct.unpack_from("<i", data, root)[0]
    field = 4 + 2 * 2  # vtable: size, table size, then version, operator_codes, subgraphs
    if field >= struct.unpack_from("<H", data, vtable)[0]:
        return 0
    offset = root + struct.unpack_from("<H", data, vtable + field)[0]
    vector = offset + struct.unpack_from("<I", data, offset)[0]
    return struct.unpack_from("<I", data, vector)[0]


def tflite_structure(path):
    """{subgraphs, if_ops, main_ops, delegated}: control flow, and the partitions XNNPACK made of the main graph."""
    from export.verify import TFLiteRunner

    undelegated = TFLiteRunner(path, default_delegate=False).interpreter._get_ops_details()
    delegated = TFLiteRunner(path).interpreter._get_ops_details()  # the main graph after XNNPACK: DELEGATE nodes added
    with open(path, "rb") as f:
        subgraphs = tflite_subgraph_count(f.read())
    return {
        "subgraphs": subgraphs,
        "if_ops": sum(op["op_name"] == "IF" for op in undelegated),
        "main_ops": len(undelegated),
        "delegated": sum(op["op_name"] == "DELEGATE" for op in delegated),
    }


def onnx_structure(path):
    """{if_nodes, nodes, transposes, convs}: node counts, subgraphs of If included."""
    import onnx

    def node_types(graph):
        for node in graph.node:
            yield node.op_type
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    yield from node_types(attribute.g)

    types = list(node_types(onnx.load(str(path)).graph))
    return {"if_nodes": types.count("If"), "nodes": len(types), "transposes": types.count("Transpose"), "convs": types.count("Conv") + types.count("QLinearConv")}


def describe_structure(fmt, structure):
    if fmt == "tflite":
        return (f"{structure['subgraphs']} subgraphs, {structure['if_ops']} IF in {structure['main_ops']} main-graph ops; "
                f"XNNPACK made {structure['delegated']} DELEGATE partition(s) of the main graph")
    return (f"{structure['if_nodes']} If, {structure['convs']} Conv, {structure['transposes']} Transpose "
            f"in {structure['nodes']} nodes (subgraphs included)")


class OnnxUnoptimized:
    """An onnxruntime session with graph optimisation off (ORT_DISABLE_ALL), one inter-op thread."""

    def __init__(self, path, threads=1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input, self.output = self.session.get_inputs()[0], self.session.get_outputs()[0]

    def __call__(self, image):
        return self.session.run([self.output.name], {self.input.name: image})[0]


def plain_onnx_via_tflite(graphs, quantize, calibration, workdir):
    """The plain backbone's ONNX file converted as the routed one is (tf2onnx from its float32 TFLite file)."""
    from export import onnx_export

    float_path = os.path.join(workdir, "plain_via_tflite_float32.onnx")
    if not os.path.exists(float_path):
        onnx_export.convert_tflite(graphs.tflite("plain", "none"), float_path)
    if quantize == "none":
        return float_path
    path = os.path.join(workdir, f"plain_via_tflite_{quantize}.onnx")
    return onnx_export.quantize(float_path, path, quantize, calibration)


def slow_runner(fmt, path, threads):
    """The same file without the interpreter's speed-up: LiteRT without XNNPACK, onnxruntime unoptimised."""
    from export.verify import TFLiteRunner

    return TFLiteRunner(path, threads, default_delegate=False) if fmt == "tflite" else OnnxUnoptimized(path, threads)


# --- Measure -----------------------------------------------------------------------------------


def measure_case(backbone_name, image_size, policy, runs, threads, calibration_count, workdir, jobs=JOBS):
    from export import verify
    from export.compact import ExportSource
    from export.exporter import _Graphs

    model = build_spottune(backbone_name, image_size, policy)
    source = ExportSource(model=model, kind="routed", origin="bench.routed_latency (random weights)")
    graphs = _Graphs(source, image_size, "conditional", workdir)
    rng = np.random.default_rng(0)
    calibration_set = rng.integers(0, 256, (calibration_count, image_size, image_size, 3), dtype=np.uint8)
    calibration = verify.single_images(calibration_set)
    image = calibration_set[:1]
    plain_macs = macs(graphs.models["plain"][0], (1, image_size, image_size, 3))

    rows = []
    for fmt, quantize in jobs:
        row = {"format": fmt, "quantize": quantize}
        try:
            runners, paths = {}, {}
            for key in ("model", "plain", "both"):
                paths[key] = os.path.join(workdir, f"{key}_{quantize}{EXTENSIONS[fmt]}")
                graphs.write(key, fmt, quantize, paths[key], calibration if quantize == "int8" else None)
                runners[key] = verify.runner_for(paths[key], threads)
            for key in ("model", "plain", "both"):
                runners["slow_" + key] = slow_runner(fmt, paths[key], threads)
            if fmt == "onnx":  # the plain backbone converted the way the routed file is: from its TFLite file
                paths["plain_via_tflite"] = plain_onnx_via_tflite(graphs, quantize, calibration, workdir)
                runners["plain_via_tflite"] = verify.runner_for(paths["plain_via_tflite"], threads)
            row["control_flow"] = graphs.control_flow.get("model")
            structure = tflite_structure if fmt == "tflite" else onnx_structure
            row["structure"] = {key: structure(paths[key]) for key in ("model", "plain", "plain_via_tflite") if key in paths}
            samples = verify.paired_latency_samples_ms(runners, image, runs)
            t = {key: float(np.median(values)) for key, values in samples.items()}
            fastest = {key: float(np.min(values)) for key, values in samples.items()}
            row["min_ratio"] = fastest["model"] / fastest["plain"]
            row["min_slow_ratio"] = fastest["slow_model"] / fastest["slow_plain"]
            if "plain_via_tflite" in t:
                row["plain_via_tflite_ms"] = t["plain_via_tflite"]
            row.update(
                routed_ms=t["model"], plain_ms=t["plain"], both_ms=t["both"], ratio=t["model"] / t["plain"],
                slow_routed_ms=t["slow_model"], slow_plain_ms=t["slow_plain"], slow_both_ms=t["slow_both"],
                slow_ratio=t["slow_model"] / t["slow_plain"],
            )
        except Exception as error:  # a converter / interpreter failure is a figure too
            row["error"] = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        rows.append(row)
    return {"backbone": backbone_name, "image_size": image_size, "policy": policy,
            "policy_macs": policy_macs(model, image_size), "plain_macs": plain_macs, "rows": rows}


# --- Print -------------------------------------------------------------------------------------


def format_case(case):
    share = case["policy_macs"] / case["plain_macs"]
    lines = [
        f"{case['backbone']} {case['image_size']} px, {policy_label(case)}: policy {case['policy_macs'] / 1e6:.2f} M multiply-adds, "
        f"plain backbone {case['plain_macs'] / 1e6:.1f} M (policy / backbone {share:.3f}; "
        f"routed at batch 1 = backbone + policy = {1 + share:.2f}x the backbone's multiply-adds)"
    ]
    header = (f"  {'file':<15}{'routed ms':>10}{'plain ms':>9}{'both ms':>9}{'routed/plain':>13}{'both/plain':>11}"
              f"  |{'slow routed ms':>15}{'slow plain ms':>14}{'routed/plain':>13}{'both/plain':>11}{'plain slow/fast':>16}  goal <= {GOAL}x")
    lines += [header, "  " + "-" * (len(header) - 2)]
    for row in case["rows"]:
        name = f"{row['format']} {'float32' if row['quantize'] == 'none' else row['quantize']}"
        if "error" in row:
            lines.append(f"  {name:<15}{'failed: ' + row['error']}")
            continue
        verdict = "met" if row["ratio"] <= GOAL else "NOT met"
        routing = "" if row.get("control_flow") else " (both copies)"
        lines.append(
            f"  {name:<15}{row['routed_ms']:>10.3f}{row['plain_ms']:>9.3f}{row['both_ms']:>9.3f}{row['ratio']:>12.2f}x{row['both_ms'] / row['plain_ms']:>10.2f}x"
            f"  |{row['slow_routed_ms']:>15.3f}{row['slow_plain_ms']:>14.3f}{row['slow_ratio']:>12.2f}x{row['slow_both_ms'] / row['slow_plain_ms']:>10.2f}x"
            f"{row['slow_plain_ms'] / row['plain_ms']:>15.2f}x  {verdict}{routing}"
        )
        for key, label in (("model", "routed"), ("plain", "plain"), ("plain_via_tflite", "plain via TFLite")):
            if key in row["structure"]:
                lines.append(f"  {'':<15}{label}: {describe_structure(row['format'], row['structure'][key])}")
        if "plain_via_tflite_ms" in row:
            lines.append(f"  {'':<15}plain converted from its TFLite file as the routed one is: {row['plain_via_tflite_ms']:.3f} ms, "
                         f"{row['plain_via_tflite_ms'] / row['plain_ms']:.2f}x the plain file; routed / it {row['routed_ms'] / row['plain_via_tflite_ms']:.2f}x")
    lines.append(f"  (slow = the same files {SLOW_NAMES['tflite']} for LiteRT, {SLOW_NAMES['onnx']} for onnxruntime)")
    return lines


def summary_lines(cases):
    """The side-by-side table: routed / plain per file, without the interpreter's speed-up, and (ONNX) against
    the plain backbone converted from TFLite as the routed file is."""
    jobs = [(row["format"], row["quantize"]) for row in cases[0]["rows"]]
    columns = [f"{'LiteRT' if f == 'tflite' else 'ONNX'} {'f32' if q == 'none' else q}" for f, q in jobs]
    slow = [f"{c} {SLOW_NAMES['tflite' if c.startswith('LiteRT') else 'onnx']}" for c in columns]
    via = [f"{c} viaTFL" for c in columns if c.startswith("ONNX")]
    lines = [
        f"routed / plain at batch 1 (goal <= {GOAL}x); {SLOW_NAMES['tflite']} = LiteRT without XNNPACK, "
        f"{SLOW_NAMES['onnx']} = onnxruntime ORT_DISABLE_ALL, viaTFL = against the plain ONNX file converted from TFLite:",
        f"  {'case':<36}{'policy/backbone MACs':>21}" + "".join(f"{c:>18}" for c in columns + slow + via),
    ]
    for case in cases:
        label = f"{case['backbone']} {case['image_size']}px {policy_label(case)}"
        rows = case["rows"]
        cells = [f"{r['ratio']:.2f}x" + ("" if r["ratio"] <= GOAL else "!") if "ratio" in r else "failed" for r in rows]
        cells += [f"{r['slow_ratio']:.2f}x" if "slow_ratio" in r else "failed" for r in rows]
        cells += [f"{r['routed_ms'] / r['plain_via_tflite_ms']:.2f}x" if "plain_via_tflite_ms" in r else "failed"
                  for r in rows if r["format"] == "onnx"]
        lines.append(f"  {label:<36}{case['policy_macs'] / case['plain_macs']:>21.3f}" + "".join(f"{c:>18}" for c in cells))
    lines.append(f"  ('!' = above the {GOAL}x goal)")
    lines.append("")
    lines.append("the same from the fastest call of each file (least disturbed by other jobs; medians above):")
    lines.append(f"  {'case':<36}" + "".join(f"{c:>18}" for c in columns + slow))
    for case in cases:
        label = f"{case['backbone']} {case['image_size']}px {policy_label(case)}"
        rows = case["rows"]
        cells = [f"{r['min_ratio']:.2f}x" + ("" if r["min_ratio"] <= GOAL else "!") if "min_ratio" in r else "failed" for r in rows]
        cells += [f"{r['min_slow_ratio']:.2f}x" if "min_slow_ratio" in r else "failed" for r in rows]
        lines.append(f"  {label:<36}" + "".join(f"{c:>18}" for c in cells))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"backbone:size[:policy_size|stem],... (default {DEFAULT_CASES})")
    p.add_argument("--runs", type=int, default=40, help="timed batch-1 calls per file (default 40)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calibration", type=int, default=16, help="random uint8 images for int8 calibration (default 16)")
    p.add_argument("--files", default=",".join(":".join(job) for job in JOBS), help="format:quantize files to time (default: all four)")
    args = p.parse_args(argv)
    cases, jobs = parse_cases(args.cases), parse_files(args.files)

    from export.host import describe, host_cpu

    print(f"batch-1 median of {args.runs} calls, {args.threads} interpreter thread(s), all files of a case timed in turns; host: {describe(host_cpu())}")
    summary = []
    for backbone_name, size, policy in cases:
        with tempfile.TemporaryDirectory(prefix="adaptune-routed-bench-") as workdir:
            case = measure_case(backbone_name, size, policy, args.runs, args.threads, args.calibration, workdir, jobs)
        print()
        for line in format_case(case):
            print(line, flush=True)
        summary.append(case)
    print()
    for line in summary_lines(summary):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
