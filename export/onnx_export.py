"""ONNX conversion (tf2onnx) and quantisation (onnxruntime.quantization).

Conversion, from the same serving graph as the TFLite files (input "image" uint8
[batch, S, S, 3], output "logits" float32):
- graphs without control flow: `tf2onnx.convert.from_function` on the serving SavedModel;
- the conditional routed graph: tf2onnx 1.17 cannot convert variables read inside `tf.cond`
  branches of a TF graph (it loses the kernel shapes), so it is converted from the float32 TFLite
  file of the same graph (`tf2onnx.convert.from_tflite`), whose IF subgraphs hold constants.
  The If nodes survive: onnxruntime runs only the taken branch.

Quantisation:
    none     float32
    float16  float16 weights and activations inside, float32 input/output kept
             (`onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)`)
    dynamic  `quantize_dynamic`, int8 weights (ConvInteger / MatMulInteger: slow on CPU for CNNs)
    int8     `quantize_static`, QDQ format, per-channel 7-bit int8 weights (reduce_range: no AVX2
             saturation, same results with and without VNNI), uint8 activations, calibrated
             on images from the training pipeline. Input stays uint8 pixels, output float32
             (ONNX has no int8-output option here; `--int8-io` applies to TFLite only).
"""

import contextlib
import io
import logging
import os
import tempfile
import warnings

from export.graph import INPUT_NAME, OUTPUT_NAME, SIGNATURE

OPSET = 17
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


class ConversionError(RuntimeError):
    """tf2onnx or the quantiser failed (caller decides whether to fall back)."""


def _quiet_tf2onnx():
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)


@contextlib.contextmanager
def _quiet():
    """Silences tf2onnx's prints, the root-logger advice of the quantiser and TF's interpreter warning."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")
            yield
    finally:
        root.setLevel(level)


def convert_saved_model(saved_model_dir, path, image_size):
    """Converts a serving SavedModel without control flow to an ONNX file at `path`."""
    import tensorflow as tf
    import tf2onnx

    from export.graph import input_signature

    _quiet_tf2onnx()
    loaded = tf.saved_model.load(saved_model_dir)
    signature = loaded.signatures[SIGNATURE]

    @tf.function(input_signature=input_signature(image_size))
    def serve(image):
        return {OUTPUT_NAME: signature(**{INPUT_NAME: image})[OUTPUT_NAME]}

    try:
        with _quiet():
            model, _ = tf2onnx.convert.from_function(serve, input_signature=input_signature(image_size), opset=OPSET)
    except Exception as error:
        raise ConversionError(f"tf2onnx failed: {_first_line(error)}") from error
    _check_and_save(model, path)
    return path


def convert_tflite(tflite_bytes, path):
    """Converts a float32 TFLite file (e.g. with IF ops) to ONNX at `path`, inputs/outputs renamed image/logits."""
    import tf2onnx

    _quiet_tf2onnx()
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "model.tflite")
        with open(source, "wb") as f:
            f.write(tflite_bytes)
        try:
            with _quiet():
                model, _ = tf2onnx.convert.from_tflite(source, opset=OPSET)
        except Exception as error:
            raise ConversionError(f"tf2onnx (from TFLite) failed: {_first_line(error)}") from error
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ConversionError(f"expected one input and one output, got {len(model.graph.input)} and {len(model.graph.output)}")
    _rename(model.graph, {model.graph.input[0].name: INPUT_NAME, model.graph.output[0].name: OUTPUT_NAME})
    _check_and_save(model, path)
    return path


def _rename(graph, names):
    """Renames tensors everywhere in `graph` and its subgraphs (If branches refer to outer names)."""
    import onnx

    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name in names:
            value.name = names[value.name]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in names:
                node.input[i] = names[name]
        for i, name in enumerate(node.output):
            if name in names:
                node.output[i] = names[name]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename(attribute.g, names)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    _rename(subgraph, names)


def _check_and_save(model, path):
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as error:
        raise ConversionError(f"the converted ONNX model is invalid: {_first_line(error)}") from error
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    onnx.save(model, path)


def quantize(float_path, path, quantize, calibration_images=None):
    """Writes the `quantize` version of the float32 ONNX file `float_path` to `path`.

    Args:
        float_path: a float32 ONNX file from `convert_saved_model` or `convert_tflite`.
        path: output file.
        quantize: one of QUANTIZATIONS ("none" copies).
        calibration_images: for "int8": a callable returning an iterable of uint8 `[1, S, S, 3]` arrays.

    Raises:
        ConversionError: the quantiser failed.
    """
    _quiet_tf2onnx()
    try:
        with _quiet():
            _quantize(float_path, path, quantize, calibration_images)
    except ValueError:
        raise
    except Exception as error:
        raise ConversionError(f"onnxruntime quantisation ({quantize}) failed: {_first_line(error)}") from error
    return path


def _quantize(float_path, path, quantize, calibration_images):
    import shutil

    import onnx

    if quantize == "none":
        if os.path.abspath(float_path) != os.path.abspath(path):
            shutil.copyfile(float_path, path)
    elif quantize == "float16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(float_path), keep_io_types=True), path)
    elif quantize == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(float_path, path, weight_type=QuantType.QInt8, extra_options={"EnableSubgraph": True})
    elif quantize == "int8":
        _quantize_static(float_path, path, calibration_images)
    else:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")


def _quantize_static(float_path, path, calibration_images):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration_images is None:
        raise ValueError("int8 quantisation needs calibration images")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.images = iter(calibration_images())

        def get_next(self):
            image = next(self.images, None)
            return None if image is None else {INPUT_NAME: image}

    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
        quantize_static(
            prepared,
            path,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            # 7-bit weights: uint8 x int8 products then never saturate the int16 pair sums of the
            # AVX2 kernel (vpmaddubsw), so the file computes the same on CPUs with and without VNNI.
            reduce_range=True,
            extra_options={"EnableSubgraph": True},
        )


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__
