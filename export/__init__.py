"""From a trained run to a deployable file: compact model, TFLite, ONNX, SavedModel, verification.

    export.compact      which network a run ships (plain, compact global-k, or routed SpotTune)
    export.graph        the serving graph: uint8 RGB in, logits out; per-image routing with tf.cond
    export.tflite       TFLite conversion and quantisation (none, float16, dynamic, int8)
    export.onnx_export  ONNX conversion (tf2onnx) and onnxruntime quantisation
    export.verify       runs a written file in LiteRT / onnxruntime / TF against the Keras model
    export.delta        the task delta of a global-k run, and rebuilding the full model from it
    export.report       the report table and export_report.json
    export.exporter     `export_run`: all of the above for one run directory

Nothing is imported here, so `import export` stays cheap.
"""
