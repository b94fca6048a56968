"""`export_run`: from a run directory to verified deployable files and a report.

    run dir -> `export.compact.choose_export_model` (plain / compact / routed Keras network)
            -> `export.graph` serving SavedModel (uint8 image -> logits; tf.cond routing)
            -> TFLite / ONNX / SavedModel, each quantisation asked for
            -> `export.verify`: every written file run in its interpreter on the validation split
            -> rejected (renamed *.rejected) when its top-1 agreement with Keras is below threshold
            -> [task delta] -> export_report.json

Routed (SpotTune) models are exported with the conditional graph; where the converter or the
interpreter cannot run it (an error, or agreement below the threshold), the file is written from
the graph that computes both copies, and the report says so. For routed exports the batch-1
latency of the plain backbone (the same network with one copy per block, no policy) and of the
both-copies graph, converted the same way, is measured in the same interpreter, the three files
timed in turns so that they share the machine's load, and the ratio routed / plain is reported.
"""

import dataclasses
import os
import shlex
import shutil
import sys
import tempfile

import numpy as np

from export import compact as export_compact
from export import delta as export_delta
from export import graph as export_graph
from export import host as export_host
from export import onnx_export, tflite
from export import verify as export_verify
from export.options import (  # noqa: F401  (the choices and defaults, declared without TensorFlow)
    DEFAULT_CALIBRATION_BATCHES,
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_AGREEMENT_QUANTIZED,
    FLOAT_QUANTIZATIONS,
    FORMATS,
    QUANTIZATIONS,
)
from export.report import REPORT_FILE, write_report
from models.errors import ModelConfigError
from rundir import layout as rd

SAVED_MODEL_DIR = "saved_model"
EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx"}


@dataclasses.dataclass
class ExportOptions:
    """What `export_run` writes and how it checks it (field names follow the CLI flags).

    Attributes:
        formats: subset of FORMATS (empty: only the delta).
        quantize: subset of QUANTIZATIONS.
        out: output directory (default: the run directory).
        max_images: verification images at most (default None: the whole validation split, else test, else
            train, topped up from the test split to 500 images where it has them).
        data_dir: the run's data at its new place (default: where config.json says, else the run's sample.npz).
        calibration_batches: batches of 32 training images for int8 calibration.
        int8_io: int8 TFLite files with an int8 output (input is uint8 pixels in every file).
        min_agreement: top-1 agreement with Keras a float32 / float16 file needs.
        min_agreement_quantized: the same for dynamic / int8 files.
        threads: interpreter threads for verification and latency.
        latency_runs: timed batch-1 calls per file (median reported).
        model: "auto", "compact" or "routed" (see `export.compact`).
        routing: "conditional" (tf.cond per block) or "both" for routed models.
        delta: also write the task delta (runs of a strategy whose `ships_task_delta` is set).
        baselines: for routed models, measure the plain backbone (and both-copies graph) latency.
        seed: seed of the image sampling.
        log: callable for progress lines, or None.
    """

    formats: tuple = ("tflite",)
    quantize: tuple = ("none",)
    out: str | None = None
    max_images: int | None = export_verify.DEFAULT_MAX_IMAGES
    data_dir: str | None = None
    calibration_batches: int = DEFAULT_CALIBRATION_BATCHES
    int8_io: bool = False
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    min_agreement_quantized: float = DEFAULT_MIN_AGREEMENT_QUANTIZED
    threads: int = 1
    latency_runs: int = 50
    model: str = "auto"
    routing: str = "conditional"
    delta: bool = False
    baselines: bool = True
    seed: int = 0
    log: object = None

    def threshold(self, quantize):
        return self.min_agreement if quantize in FLOAT_QUANTIZATIONS else self.min_agreement_quantized


def parse_list(text, allowed, what):
    """"a,b" or "all" -> tuple in `allowed` order; ModelConfigError (one line) on unknown names."""
    names = [name.strip().lower().replace("-", "_") for name in str(text).split(",") if name.strip()]
    if "all" in names:
        return tuple(allowed)
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        given = ", ".join(repr(name) for name in unknown) or repr(text)
        raise ModelConfigError(f"unknown {what} {given}; choose from {', '.join(allowed)} or all")
    return tuple(name for name in allowed if name in names)


def file_name(fmt, quantize, int8_io=False):
    if fmt == "saved_model":
        return SAVED_MODEL_DIR
    suffix = "float32" if quantize == "none" else quantize
    if quantize == "int8" and int8_io and fmt == "tflite":
        suffix = "int8_io"
    return f"model_{suffix}{EXTENSIONS[fmt]}"


def check_options(options):
    for fmt in options.formats:
        if fmt not in FORMATS:
            raise ModelConfigError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)} or all")
    for quantize in options.quantize:
        if quantize not in QUANTIZATIONS:
            raise ModelConfigError(f"unknown quantization {quantize!r}; choose from {', '.join(QUANTIZATIONS)} or all")
    if options.routing not in export_graph.ROUTINGS:
        raise ModelConfigError(f"unknown --routing {options.routing!r}; choose from {', '.join(export_graph.ROUTINGS)}")
    if options.max_images is not None and options.max_images < 1:
        raise ModelConfigError(f"--max-images must be at least 1, got {options.max_images}")
    if options.threads < 1 or options.latency_runs < 1:
        raise ModelConfigError(f"--threads and --latency-runs must be at least 1, got {options.threads} and {options.latency_runs}")
    if options.calibration_batches < 1:
        raise ModelConfigError(f"--calibration-batches must be at least 1, got {options.calibration_batches}")
    for name in ("min_agreement", "min_agreement_quantized"):
        if not 0.0 <= getattr(options, name) <= 1.0:
            raise ModelConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(options, name)}")
    if not options.formats and not options.delta:
        raise ModelConfigError("nothing to export: pass --format and/or --delta")


def check_delta_run(run):
    from models.strategies import STRATEGIES, get_strategy

    if not get_strategy(run.strategy).ships_task_delta:
        shipping = ", ".join(name for name, strategy in STRATEGIES.items() if strategy.ships_task_delta)
        raise ModelConfigError(
            f"--delta needs a run of {shipping}; {run.directory} is a {run.strategy} run (its model is not the pretrained backbone plus k blocks)"
        )
    if str(run.config.weights).lower() == "none":
        raise ModelConfigError(
            f"--delta needs a run on pretrained weights; {run.directory} used --weights none, a backbone no device can have"
        )


class _Graphs:
    """Serving graphs of one export, converted lazily and cached (SavedModel, TFLite bytes, float ONNX)."""

    def __init__(self, source, image_size, routing, workdir):
        self.source = source
        self.image_size = image_size
        self.workdir = workdir
        self.models = {"model": (source.model, routing)}
        if source.kind == "routed":
            from models.spottune.classifier import routed_blocks
            from models.spottune.compact import compact_classifier

            plain = compact_classifier(source.model, decisions=[0] * len(routed_blocks(source.model)), name="plain_backbone")
            self.models["both"] = (source.model, "both")
            self.models["plain"] = (plain, "both")
        self._saved, self._tflite, self._onnx, self.control_flow = {}, {}, {}, {}

    def saved_model(self, key):
        if key not in self._saved:
            model, routing = self.models[key]
            function, control_flow = export_graph.serving_function(model, routing)
            path = os.path.join(self.workdir, f"saved_model_{key}")
            export_graph.write_saved_model(model, function, path, self.image_size)
            self._saved[key], self.control_flow[key] = path, control_flow
        return self._saved[key]

    def tflite(self, key, quantize, calibration=None, int8_io=False):
        cache = (key, quantize, int8_io)
        if cache not in self._tflite:
            self._tflite[cache] = tflite.convert(self.saved_model(key), quantize, calibration, int8_io)
        return self._tflite[cache]

    def float_onnx(self, key):
        if key not in self._onnx:
            path = os.path.join(self.workdir, f"{key}_float32.onnx")
            saved = self.saved_model(key)
            if self.control_flow[key]:
                onnx_export.convert_tflite(self.tflite(key, "none"), path)
            else:
                onnx_export.convert_saved_model(saved, path, self.image_size)
            self._onnx[key] = path
        return self._onnx[key]

    def write(self, key, fmt, quantize, path, calibration=None, int8_io=False):
        """Writes the `fmt` / `quantize` file of graph `key` to `path`, whole or not at all: it is written
        beside `path` first and renamed over it, so a failed write (a full disk) leaves no half file."""
        _remove(path)
        with rd.replacing(path) as tmp:
            if fmt == "tflite":
                data = self.tflite(key, quantize, calibration, int8_io)
                with open(tmp, "wb") as f:
                    f.write(data)
            elif fmt == "onnx":
                onnx_export.quantize(self.float_onnx(key), tmp, quantize, calibration)
            elif fmt == "saved_model":
                try:
                    shutil.copytree(self.saved_model(key), tmp)
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
            else:
                raise ValueError(fmt)
        return path


def _remove(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def _first_line(error):
    text = str(error).strip()
    return (text.splitlines()[0][:300] if text else "") or type(error).__name__


def export_run(run_directory, options=None):
    """Exports one run directory; returns the report (also written as export_report.json).

    Raises:
        rundir.layout.RunDirError: missing or incomplete run directory.
        ModelConfigError: unknown format / quantisation / mode, --delta on a run whose strategy ships no task delta.
    A file that fails conversion or verification does not raise: its row has status "failed" or
    "rejected" (see `export.report.problems`).
    """
    from rundir.data import load_run_data
    from rundir.run import open_run

    options = options or ExportOptions()
    check_options(options)
    log = options.log or (lambda message: None)
    run = open_run(run_directory)
    if options.delta:
        check_delta_run(run)
    out = options.out or run.directory
    rd.check_writable(out, "--out", make_parents=True)  # before any data is read
    os.makedirs(out, exist_ok=True)

    source = export_compact.choose_export_model(run, options.model)
    log(f"exporting {source.kind} network: {source.origin}")
    bundle = load_run_data(run.directory, run.config, options.data_dir)  # the data, moved data, or the run's sample
    images, labels, split = export_verify.verification_images(bundle, run.image_size, options.max_images, options.seed)
    reference = export_verify.keras_logits(source.model, images)
    bad = int(np.sum(~np.all(np.isfinite(reference), axis=-1)))
    if bad:
        raise ModelConfigError(
            f"the model in {run.directory} gives NaN/inf logits on {bad} of {len(images)} {split} images "
            f"(final train loss {run.metrics.get('final_train_loss')}): training diverged; retrain (e.g. lower --lr) before exporting"
        )
    keras_accuracy = float(np.mean(np.argmax(reference, -1) == labels))
    needs_calibration = "int8" in options.quantize and any(f in ("tflite", "onnx") for f in options.formats)
    calibration = None
    if needs_calibration:
        calibration_set = export_verify.calibration_images(bundle, run.image_size, options.calibration_batches, seed=options.seed)
        calibration = export_verify.single_images(calibration_set)
        log(f"int8 calibration: {len(calibration_set)} training images")

    report = {
        "run": run.directory,
        "strategy": run.strategy,
        "backbone": run.config.backbone,
        "exported": {"kind": source.kind, "origin": source.origin, "decisions": source.decisions,
                     "note": getattr(_strategy_of(run), "export_note", "") or None},
        "image_size": run.image_size,
        "class_names": run.class_names,
        "input": f"'image' uint8 [1, {run.image_size}, {run.image_size}, 3] RGB 0..255 (batch axis dynamic), "
        "resized and centre-cropped as in evaluation; scaling and normalisation happen inside the model",
        "output": f"'logits' float32 [1, {len(run.class_names)}] in class_names order (softmax for probabilities)"
        + ("; int8 TFLite files with --int8-io: int8 logits, dequantise with the output's scale / zero point" if options.int8_io else ""),
        "verification": {"split": split, "images": int(len(images)), "keras_accuracy": keras_accuracy,
                         "data": getattr(bundle, "source", ""), "agreement_interval": "95 %, Wilson score"},
        "thresholds": {"float": options.min_agreement, "quantized": options.min_agreement_quantized},
        "calibration_images": int(len(calibration_set)) if needs_calibration else None,
        "threads": options.threads,
        "host": export_host.host_cpu(),
        "files": [],
        "delta": None,
    }
    with tempfile.TemporaryDirectory(prefix="adaptune-export-") as workdir:
        graphs = _Graphs(source, run.image_size, options.routing, workdir)
        jobs = [(fmt, q) for fmt in FORMATS if fmt in options.formats for q in options.quantize if fmt != "saved_model"]
        if "saved_model" in options.formats:
            jobs.insert(0, ("saved_model", "none"))
        for fmt, quantize in jobs:
            log(f"{fmt} {quantize} ...")
            row = _export_one(graphs, fmt, quantize, out, images, labels, reference, calibration, options, workdir)
            if fmt == "saved_model" and options.quantize != ("none",):
                row["note"] = (row.get("note") + "; " if row.get("note") else "") + "SavedModel is float32 only (quantisation applies to tflite/onnx)"
            report["files"].append(row)
            log(f"  {row['file']}: {row['status']}" + (f" ({row['note']})" if row.get("note") else ""))
        if options.delta:
            report["delta"] = _export_delta(run, source, out, images, options)
    write_report(out, report)
    report["report_file"] = os.path.join(out, REPORT_FILE)
    return report


def _export_one(graphs, fmt, quantize, out, images, labels, reference, calibration, options, workdir):
    name = file_name(fmt, quantize, options.int8_io)
    path = os.path.join(out, name)
    routed = graphs.source.kind == "routed"
    row = {"file": name, "format": fmt, "quantize": quantize, "status": "failed", "path": path}
    if fmt == "tflite" and quantize == "int8":
        row["int8_io"] = bool(options.int8_io)
    candidates = ["model"]
    if routed and options.routing == "conditional":
        candidates.append("both")
    threshold = options.threshold(quantize)
    failures = []
    for key in candidates:
        try:
            graphs.write(key, fmt, quantize, path, calibration, options.int8_io)
            result = export_verify.verify_file(path, images, labels, reference, options.threads, options.latency_runs)
        except Exception as error:  # converter, quantiser or interpreter: record and try the fallback
            _remove(path)
            failures.append(f"{_graph_label(graphs, key)} graph: {_first_line(error)}")
            continue
        if result["agreement"] < threshold and key != candidates[-1]:
            failures.append(f"{_graph_label(graphs, key)} graph: agreement {result['agreement']:.4f} < {threshold}")
            continue
        row.update(result)
        row["size_bytes"] = export_verify.file_size(path)
        if routed:
            row["routing"] = "conditional" if graphs.control_flow.get(key) else "both"
        break
    else:
        row["note"] = "; ".join(failures)
        return row
    if failures:
        row["note"] = "conditional execution not available here, both copies computed (" + "; ".join(failures) + ")"
    if row["agreement"] < threshold:
        rejected = path + ".rejected"
        _remove(rejected)
        os.replace(path, rejected)
        row.update(status="rejected", path=rejected, file=name + ".rejected")
        flag = "--min-agreement" if quantize in FLOAT_QUANTIZATIONS else "--min-agreement-quantized"
        row["note"] = (
            f"top-1 agreement with Keras {row['agreement']:.4f} < {threshold} ({flag}); written as {name}.rejected, not as {name}"
            + (f"; {row['note']}" if row.get("note") else "")
        )
    else:
        row["status"] = "ok"
    if routed and options.baselines and fmt != "saved_model":
        _routed_baselines(graphs, row, fmt, quantize, images[:1], calibration, options, workdir)
    return row


def _graph_label(graphs, key):
    if key == "model" and graphs.source.kind == "routed":
        return "conditional" if graphs.models["model"][1] == "conditional" else "both-copies"
    return {"both": "both-copies", "plain": "plain"}.get(key, "serving")


def _routed_baselines(graphs, row, fmt, quantize, image, calibration, options, workdir):
    """Batch-1 latency of the routed file, the plain backbone and (if the file is conditional) the
    both-copies graph, converted the same way and timed in turns in the same interpreter."""
    try:
        runners = {"routed": export_verify.runner_for(row["path"], options.threads)}
    except Exception as error:  # the row already holds the verification latency
        row["note"] = (row.get("note") + "; " if row.get("note") else "") + f"latency baselines skipped: {_first_line(error)}"
        return
    keys = ["plain"] + (["both"] if row.get("routing") == "conditional" else [])
    for key in keys:
        path = os.path.join(workdir, f"baseline_{key}_{quantize}{EXTENSIONS[fmt]}")
        try:
            graphs.write(key, fmt, quantize, path, calibration, options.int8_io)
            runners[key] = export_verify.runner_for(path, options.threads)
        except Exception as error:
            row["note"] = (row.get("note") + "; " if row.get("note") else "") + f"{key} baseline failed: {_first_line(error)}"
    if len(runners) == 1:
        return
    latencies = export_verify.paired_latencies_ms(runners, image, options.latency_runs)
    row["latency_ms"] = latencies.pop("routed")
    for key, latency in latencies.items():
        row[f"{key}_latency_ms"] = latency
    if row.get("plain_latency_ms"):
        row["latency_ratio"] = row["latency_ms"] / row["plain_latency_ms"]


def _export_delta(run, source, out, images, options):
    from models.backbones import build_backbone

    compact_source = source if source.kind == "compact" else export_compact.choose_export_model(run, "compact")
    backbone = build_backbone(run.config.backbone, weights=run.config.weights)
    finetuned = export_compact.finetuned_blocks(run, compact_source)
    meta, arrays = export_delta.make_delta(
        compact_source.model,
        backbone,
        finetuned,
        run.config.backbone,
        run.config.weights,
        class_names=run.class_names,
        image_size=run.image_size,
        extra={"strategy": run.strategy, "decisions": compact_source.decisions, "source_run": os.path.abspath(run.directory)},
    )
    path = os.path.join(out, export_delta.DELTA_FILE)
    size = export_delta.write_delta(path, meta, arrays)
    rebuilt = export_delta.rebuild(path, weights=run.config.weights)
    sample = images[: min(64, len(images))]
    difference = float(np.max(np.abs(export_verify.keras_logits(rebuilt, sample) - export_verify.keras_logits(compact_source.model, sample))))
    full = export_delta.weight_bytes(compact_source.model)
    compact_file = run.path(export_compact.COMPACT_FILE)
    return {
        "file": export_delta.DELTA_FILE,
        "path": path,
        "size_bytes": size,
        "delta_weight_bytes": int(sum(a.nbytes for a in arrays.values())),
        "full_weight_bytes": full,
        "full_keras_bytes": os.path.getsize(compact_file) if os.path.isfile(compact_file) else None,
        "fraction_of_full": size / full,
        "parts": meta["parts"],
        "finetuned_blocks": meta["finetuned_blocks"],
        "rebuilt_max_abs_diff": difference,
        "rebuild_command": f"python -m app.export --rebuild-delta {shlex.quote(str(path))} --out model.keras",
    }


def print_progress(message):
    print(message, file=sys.stderr, flush=True)


def _strategy_of(run):
    from models.strategies import get_strategy

    return get_strategy(run.strategy)
