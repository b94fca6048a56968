"""TFLite conversion of a serving SavedModel, with quantisation.

    none     float32 weights and activations
    float16  float16 weights (dequantised to float32 at load; half the size)
    dynamic  int8 weights, float activations quantised on the fly (dynamic-range quantisation)
    int8     full-integer: int8 weights and activations, ranges calibrated on a representative
             dataset drawn from the training pipeline. The input stays uint8 RGB (raw pixels, no
             quantisation parameters: the graph casts it); with `int8_io` the output is int8 too
             (logits = scale * (q - zero_point), from the output's quantization parameters),
             otherwise float32.

The converter runs the int8 calibration in TensorFlow's own interpreter, which logs a deprecation
warning; it is silenced here. Everything that runs a `.tflite` file in adaptune uses
`ai_edge_litert.interpreter.Interpreter`.
"""

import contextlib
import io
import warnings

import tensorflow as tf

from export.graph import INPUT_NAME, SIGNATURE

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")


class ConversionError(RuntimeError):
    """The converter failed on a graph (caller decides whether to fall back)."""


def convert(saved_model_dir, quantize="none", representative_images=None, int8_io=False):
    """Converts the "serving_default" signature of `saved_model_dir` to TFLite bytes.

    Args:
        saved_model_dir: from `export.graph.write_saved_model`.
        quantize: one of QUANTIZATIONS.
        representative_images: for "int8": a callable returning an iterable of uint8 arrays
            `[1, S, S, 3]` (calibration images).
        int8_io: for "int8": int8 output (the input is uint8 either way).

    Raises:
        ValueError: unknown quantize, or int8 without representative images.
        ConversionError: the converter failed (message: its last meaningful line).
    """
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS}, got {quantize!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        if representative_images is None:
            raise ValueError("int8 quantisation needs representative images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ({INPUT_NAME: image} for image in representative_images())
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.int8
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", message=r".*tf\.lite\.Interpreter is deprecated.*")
        try:
            return converter.convert()
        except Exception as error:  # ConverterError, RuntimeError, ValueError from the MLIR passes
            raise ConversionError(_summary(error)) from error


def _summary(error):
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if "error" in line.lower()] or lines or [type(error).__name__]
    return useful[0][:400]
