"""Runs a written file in its interpreter and compares it with the Keras model it came from.

Interpreters: `.tflite` -> `ai_edge_litert.interpreter.Interpreter` (XNNPACK on CPU), `.onnx` ->
onnxruntime (CPUExecutionProvider), SavedModel directory -> TensorFlow. Every file is run one
image at a time (batch 1, as on a phone), on uint8 images: the evaluation preprocessing of the
run's data pipeline, rounded to integers. The Keras reference runs on the same rounded images, so
that agreement measures the export, not the rounding.

Per file: accuracy, top-1 agreement with Keras, max |exported logit - Keras logit|, and the median
batch-1 latency (after warm-up) with `threads` interpreter threads.
"""

import os
import time

import numpy as np

from export.options import DEFAULT_MAX_IMAGES  # noqa: F401  (declared without TensorFlow there)

CALIBRATION_BATCH_SIZE = 32


# --- Images ------------------------------------------------------------------------------------


def to_uint8(images):
    """float RGB [0, 255] -> uint8 (rounded, clipped): what a device feeds the exported model."""
    return np.clip(np.rint(np.asarray(images, np.float32)), 0, 255).astype(np.uint8)


def verification_split(bundle):
    """The split used for verification: validation, else test, else train."""
    labelled = list(getattr(bundle, "labelled_splits", bundle.split_sizes))
    for split in ("validation", "test", "train"):
        if split in labelled and bundle.split_sizes.get(split):
            return split
    raise ValueError(f"dataset {bundle.name} has no labelled split to verify on")


def verification_images(bundle, image_size, max_images=DEFAULT_MAX_IMAGES, seed=0):
    """(uint8 images [N, S, S, 3], int labels [N], split): up to `max_images` of the verification split.

    When the split is larger than `max_images`, a seeded shuffle picks which images (so a capped
    sample is not one class of an ordered split).
    """
    split = verification_split(bundle)
    shuffle = bundle.split_sizes[split] > max_images
    data = bundle.batches(split, 64, training=False, image_size=image_size, seed=seed, shuffle=shuffle)
    images, labels, count = [], [], 0
    for batch_images, batch_labels in data:
        images.append(to_uint8(batch_images.numpy()))
        labels.append(np.asarray(batch_labels))
        count += len(labels[-1])
        if count >= max_images:
            break
    if not images:
        raise ValueError(f"split {split} of {bundle.name} gave no images")
    return np.concatenate(images)[:max_images], np.concatenate(labels)[:max_images].astype(np.int64), split


def calibration_images(bundle, image_size, batches, batch_size=CALIBRATION_BATCH_SIZE, seed=0):
    """uint8 images [N, S, S, 3] from the training split (evaluation preprocessing, seeded shuffle), N <= batches * batch_size."""
    data = bundle.batches("train", batch_size, training=False, image_size=image_size, seed=seed, shuffle=True)
    images = [to_uint8(batch.numpy()) for batch, _ in data.take(int(batches))]
    if not images:
        raise ValueError(f"the train split of {bundle.name} gave no calibration images")
    return np.concatenate(images)


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

    def __init__(self, path, threads=1):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(path), num_threads=int(threads))
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


def paired_latencies_ms(runners, image, runs=50, warmup=5):
    """{name: median batch-1 ms} of several runners timed in turns, so that they share the machine's load.

    Ratios of these medians are steadier on a busy machine than ratios of separate measurements.
    """
    for runner in runners.values():
        for _ in range(int(warmup)):
            runner(image)
    times = {name: [] for name in runners}
    for _ in range(max(1, int(runs))):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner(image)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(values) * 1e3) for name, values in times.items()}


def compare(logits, reference, labels):
    """accuracy, agreement (top-1 with the reference) and max |difference| of two logit arrays."""
    predicted = np.argmax(logits, axis=-1)
    expected = np.argmax(reference, axis=-1)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "agreement": float(np.mean(predicted == expected)),
        "max_abs_diff": float(np.max(np.abs(logits - reference))),
    }


def verify_file(path, images, labels, reference, threads=1, latency_runs=50):
    """Loads `path` in its interpreter, runs every image, and measures it against `reference` logits.

    Returns:
        dict: interpreter, io (input/output description), images, accuracy, agreement,
        max_abs_diff, latency_ms.
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
