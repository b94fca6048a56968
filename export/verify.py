"""Runs a written file in its interpreter and compares it with the Keras model it came from.

Interpreters: `.tflite` -> `ai_edge_litert.interpreter.Interpreter` (XNNPACK on CPU), `.onnx` ->
onnxruntime (CPUExecutionProvider), SavedModel directory -> TensorFlow. Every file is run one
image at a time (batch 1, as on a phone), on uint8 images: the evaluation preprocessing of the
run's data pipeline, rounded to integers. The Keras reference runs on the same rounded images, so
that agreement measures the export, not the rounding.

Per file: accuracy, top-1 agreement with Keras with its 95 % Wilson score interval, max |exported
logit - Keras logit|, and the median batch-1 latency (after warm-up) with `threads` interpreter threads.
"""

import math
import os
import time

import numpy as np

from export.options import DEFAULT_MAX_IMAGES, MIN_VERIFICATION_IMAGES
from rundir import sample as run_sample

CALIBRATION_BATCH_SIZE = 32


# --- Images ------------------------------------------------------------------------------------


def to_uint8(images):
    """float RGB [0, 255] -> uint8 (rounded, clipped): what a device feeds the exported model."""
    return run_sample.to_uint8(images)


def verification_images(bundle, image_size, max_images=DEFAULT_MAX_IMAGES, seed=0, minimum=MIN_VERIFICATION_IMAGES):
    """(uint8 images [N, S, S, 3], int labels [N], splits): what every file is verified on.

    The whole validation split (else test, else train), topped up from the test split to `minimum`
    images where it has them (`rundir.sample.verification_set`); `max_images` caps it (a seeded
    shuffle picks which images, so a capped sample is not one class of an ordered split). `splits`
    names them, e.g. "validation+test".
    """
    images, labels, splits = run_sample.verification_set(bundle, image_size, max_images=max_images, minimum=minimum, seed=seed)
    return images, labels.astype(np.int64), run_sample.describe_splits(splits)


def calibration_images(bundle, image_size, batches, batch_size=CALIBRATION_BATCH_SIZE, seed=0):
    """uint8 images [N, S, S, 3] from the training split (evaluation preprocessing, seeded shuffle), N <= batches * batch_size."""
    images = run_sample.calibration_set(bundle, image_size, int(batches) * int(batch_size), seed=seed)
    if not len(images):
        raise ValueError(f"the train split of {bundle.name} gave no calibration images")
    return images


def single_images(images):
    """A callable returning an iterator of `[1, S, S, 3]` arrays (the shape of converter calibration data)."""
    return lambda: (images[i : i + 1] for i in range(len(images)))


def keras_logits(model, images, batch_size=64):
    """The Keras model's logits on uint8 images (cast to float32, as the exported graph does)."""
    import keras

    outputs = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].astype(np.float32)
        outputs.append(keras.ops.convert_to_numpy(model(x, training=False)))
    return np.concatenate(outputs).astype(np.float32)


# --- Runners -----------------------------------------------------------------------------------


class TFLiteRunner:
    """Runs a `.tflite` file in the LiteRT interpreter, one image at a time; returns float logits."""

    interpreter_name = "LiteRT"

    def __init__(self, path, threads=1, default_delegate=True):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # default_delegate=False: LiteRT's builtin kernels only, without XNNPACK (bench.routed_latency).
        resolver = OpResolverType.AUTO if default_delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.interpreter = Interpreter(model_path=str(path), num_threads=int(threads), experimental_op_resolver_type=resolver)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        if list(self.input["shape"][1:]) and self.input["shape"][0] != 1:
            self.interpreter.resize_tensor_input(self.input["index"], [1, *self.input["shape"][1:]])
        self.interpreter.allocate_tensors()
        scale, zero_point = self.output["quantization"]
        self.output_quantization = (float(scale), int(zero_point)) if self.output["dtype"] in (np.int8, np.uint8) and scale else None

    def describe_io(self):
        out = f"{np.dtype(self.output['dtype']).name} logits"
        if self.output_quantization:
            out += f" (logits = {self.output_quantization[0]:.6g} * (q - {self.output_quantization[1]}))"
        shape = [int(d) if int(d) >= 0 else None for d in self.input["shape_signature"]]
        return f"{np.dtype(self.input['dtype']).name} {shape} -> {out}"

    def __call__(self, image):
        self.interpreter.set_tensor(self.input["index"], image)
        self.interpreter.invoke()
        logits = self.interpreter.get_tensor(self.output["index"])
        if self.output_quantization:
            scale, zero_point = self.output_quantization
            return (logits.astype(np.float32) - zero_point) * scale
        return logits.astype(np.float32)


class OnnxRunner:
    """Runs an `.onnx` file in onnxruntime (CPU), one image at a time."""

    interpreter_name = "onnxruntime"

    def __init__(self, path, threads=1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0]
        self.output = self.session.get_outputs()[0]

    def describe_io(self):
        return f"{self.input.type} {self.input.shape} -> {self.output.type} logits"

    def __call__(self, image):
        return np.asarray(self.session.run([self.output.name], {self.input.name: image})[0], np.float32)


class SavedModelRunner:
    """Runs a SavedModel directory's "serving_default" signature in TensorFlow."""

    interpreter_name = "TensorFlow"

    def __init__(self, path, threads=None):
        import tensorflow as tf

        from export.graph import SIGNATURE

        self.tf = tf
        self.signature = tf.saved_model.load(str(path)).signatures[SIGNATURE]

    def describe_io(self):
        spec = self.signature.structured_input_signature[1]
        return ", ".join(f"{name}: {s.dtype.name} {s.shape.as_list()}" for name, s in spec.items()) + " -> float32 logits"

    def __call__(self, image):
        from export.graph import INPUT_NAME, OUTPUT_NAME

        return self.signature(**{INPUT_NAME: self.tf.constant(image)})[OUTPUT_NAME].numpy().astype(np.float32)


def runner_for(path, threads=1):
    """The runner for a written file, chosen by its extension (a directory is a SavedModel; "x.tflite.rejected" is TFLite)."""
    if os.path.isdir(path):
        return SavedModelRunner(path, threads)
    name = str(path).removesuffix(".rejected")
    if name.endswith(".tflite"):
        return TFLiteRunner(path, threads)
    if name.endswith(".onnx"):
        return OnnxRunner(path, threads)
    raise ValueError(f"no runner for {path}")


# --- Measures ----------------------------------------------------------------------------------


def run_all(runner, images):
    """Logits of every image, run one at a time."""
    return np.concatenate([runner(images[i : i + 1]) for i in range(len(images))])


def median_latency_ms(runner, image, runs=50, warmup=5):
    """Median wall time of one batch-1 call, in milliseconds."""
    for _ in range(int(warmup)):
        runner(image)
    times = []
    for _ in range(max(1, int(runs))):
        start = time.perf_counter()
        runner(image)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def paired_latencies_ms(runners, image, runs=50, warmup=5, statistic=np.median):
    """{name: median batch-1 ms} of several runners timed in turns, so that they share the machine's load.

    Ratios of these medians are steadier on a busy machine than ratios of separate measurements.
    `statistic` (e.g. `np.min`, the least disturbed call) replaces the median.
    """
    samples = paired_latency_samples_ms(runners, image, runs, warmup)
    return {name: float(statistic(values)) for name, values in samples.items()}


def paired_latency_samples_ms(runners, image, runs=50, warmup=5):
    """{name: [ms of each batch-1 call]} of several runners timed in turns (see `paired_latencies_ms`)."""
    for runner in runners.values():
        for _ in range(int(warmup)):
            runner(image)
    times = {name: [] for name in runners}
    for _ in range(max(1, int(runs))):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner(image)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def wilson_interval(successes, count, z=1.959963984540054):
    """The 95 % Wilson score interval (lower, upper) of a proportion `successes / count`."""
    if count <= 0:
        return (0.0, 1.0)
    p = successes / count
    denominator = 1 + z * z / count
    centre = (p + z * z / (2 * count)) / denominator
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denominator
    lower = 0.0 if successes == 0 else max(0.0, centre - half)
    upper = 1.0 if successes == count else min(1.0, centre + half)
    return (lower, upper)


def compare(logits, reference, labels):
    """accuracy, agreement (top-1 with the reference) with its 95 % Wilson interval, and max |difference|."""
    predicted = np.argmax(logits, axis=-1)
    expected = np.argmax(reference, axis=-1)
    agreeing = int(np.sum(predicted == expected))
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "agreement": float(agreeing / len(expected)),
        "agreement_interval": list(wilson_interval(agreeing, len(expected))),
        "max_abs_diff": float(np.max(np.abs(logits - reference))),
    }


def verify_file(path, images, labels, reference, threads=1, latency_runs=50):
    """Loads `path` in its interpreter, runs every image, and measures it against `reference` logits.

    Returns:
        dict: interpreter, io (input/output description), images, accuracy, agreement,
        agreement_interval (95 %, Wilson score), max_abs_diff, latency_ms.
    """
    runner = runner_for(path, threads)
    logits = run_all(runner, images)
    result = {"interpreter": runner.interpreter_name, "io": runner.describe_io(), "images": int(len(images))}
    result.update(compare(logits, reference, labels))
    result["latency_ms"] = median_latency_ms(runner, images[:1], runs=latency_runs)
    return result


def file_size(path):
    """Bytes of a file, or of every file under a directory (SavedModel)."""
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)
    return os.path.getsize(path)
