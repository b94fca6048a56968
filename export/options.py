"""The choices and defaults of an export, without TensorFlow: `python -m app.export --help` reads them
before anything heavy is imported (`export.exporter` and `export.verify` take them from here)."""

FORMATS = ("tflite", "onnx", "saved_model")
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
FLOAT_QUANTIZATIONS = ("none", "float16")
DEFAULT_MIN_AGREEMENT = 0.99
# int8 and dynamic-range files: rounding moves near-tied logits, so a lower bar (measured: 0.96 to
# 1.00 for trained ResNet-20 / ResNet-26 / SqueezeNet on the embedded data, see the README table).
DEFAULT_MIN_AGREEMENT_QUANTIZED = 0.95
DEFAULT_CALIBRATION_BATCHES = 10
DEFAULT_MAX_IMAGES = None  # verification images (export.verify): the whole validation split, topped up from test
MIN_VERIFICATION_IMAGES = 500  # ... to at least this many where the data has them
