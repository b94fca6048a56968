"""python -m app.export: a finished run -> verified TFLite / ONNX / SavedModel files and a report.

Examples:
    python -m app.export --run runs/<run>                                   # float32 model_float32.tflite
    python -m app.export --run runs/<run> --format tflite,onnx --quantize none,int8
    python -m app.export --run runs/<run> --format all --quantize all --out deploy/
    python -m app.export --run runs/<run> --delta                           # task_delta.npz only (global-k runs)
    python -m app.export --rebuild-delta runs/<run>/task_delta.npz --out model.keras

Every file takes uint8 RGB images of the run's size and returns logits; it is loaded back in its
interpreter (LiteRT, onnxruntime, TensorFlow) and run on the validation split (where the data has
moved: --data-dir; where it is gone: the run's sample.npz). A file whose top-1
agreement with the Keras model is below the threshold is kept only as <file>.rejected, and the
command exits with status 1. export_report.json holds the table.
"""

import argparse
import sys

from app.errors import one_line_errors

PROGRAM = "python -m app.export"


def build_parser():
    from export.options import (
        DEFAULT_CALIBRATION_BATCHES,
        DEFAULT_MAX_IMAGES,
        DEFAULT_MIN_AGREEMENT,
        DEFAULT_MIN_AGREEMENT_QUANTIZED,
        FORMATS,
        MIN_VERIFICATION_IMAGES,
        QUANTIZATIONS,
    )
    from models.strategies import STRATEGIES

    def strategies(test):
        return ", ".join(name for name, strategy in STRATEGIES.items() if test(strategy))

    p = argparse.ArgumentParser(prog=PROGRAM, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run directory written by python -m app.train")
    p.add_argument("--format", help=f"comma list of {', '.join(FORMATS)}, or all (default: tflite; none with --delta alone)")
    p.add_argument("--quantize", default="none", help=f"comma list of {', '.join(QUANTIZATIONS)}, or all (default: none = float32)")
    p.add_argument("--out", help="output directory (default: the run directory); with --rebuild-delta: the .keras file to write")
    p.add_argument("--model", default="auto", choices=("auto", "compact", "routed"),
                   help=f"what to export: auto (compact for {strategies(lambda s: s.export_kind == 'compact')} and the plain strategies, "
                        f"routed for {strategies(lambda s: s.export_kind == 'routed')}), "
                        "compact (one plain backbone), routed (policy + both copies)")
    p.add_argument("--routing", default="conditional", choices=("conditional", "both"),
                   help="routed models: conditional (only the chosen copy of each block runs for one image) or both")
    check = p.add_argument_group("verification")
    check.add_argument("--max-images", type=int, default=DEFAULT_MAX_IMAGES,
                       help=f"verification images at most (default: the whole validation split, topped up from the test split to {MIN_VERIFICATION_IMAGES} where it has them)")
    check.add_argument("--data-dir", help="the run's data at its new place (default: where the run's config.json says; where it is gone, the run's sample.npz)")
    check.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT,
                       help=f"top-1 agreement with Keras a float32/float16 file needs (default {DEFAULT_MIN_AGREEMENT})")
    check.add_argument("--min-agreement-quantized", type=float, default=DEFAULT_MIN_AGREEMENT_QUANTIZED,
                       help=f"the same for dynamic and int8 files (default {DEFAULT_MIN_AGREEMENT_QUANTIZED})")
    check.add_argument("--threads", type=int, default=1, help="interpreter threads for verification and latency (default 1)")
    check.add_argument("--latency-runs", type=int, default=50, help="timed batch-1 calls per file (default 50, median reported)")
    check.add_argument("--no-baselines", action="store_true", help="routed models: skip the plain-backbone latency baseline")
    quant = p.add_argument_group("int8")
    quant.add_argument("--calibration-batches", type=int, default=DEFAULT_CALIBRATION_BATCHES,
                       help=f"batches of 32 training images for int8 calibration (default {DEFAULT_CALIBRATION_BATCHES})")
    quant.add_argument("--int8-io", action="store_true", help="int8 TFLite files get an int8 output (the input is uint8 pixels in every file)")
    delta = p.add_argument_group(f"task delta ({strategies(lambda s: s.ships_task_delta)} runs)")
    delta.add_argument("--delta", action="store_true", help="write task_delta.npz: the fine-tuned blocks, head and classifier only")
    delta.add_argument("--rebuild-delta", metavar="FILE", help="rebuild the full Keras model from a delta file and the pretrained backbone; writes --out")
    delta.add_argument("--weights", help="with --rebuild-delta: the backbone's weights here ('default' or a file; default: as recorded)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def rebuild_delta(args):
    import os

    from export.delta import read_delta, rebuild
    from models.errors import ModelConfigError

    if not args.out or not args.out.endswith(".keras"):
        raise ModelConfigError("--rebuild-delta needs --out FILE.keras, the model file to write")
    meta, _ = read_delta(args.rebuild_delta)
    model = rebuild(args.rebuild_delta, weights=args.weights)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    model.save(args.out)
    print(f"rebuilt {meta['backbone']} classifier ({meta['num_classes']} classes, blocks {meta['finetuned_blocks']} fine-tuned, "
          f"image size {meta.get('image_size')}) -> {args.out}")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    with one_line_errors(PROGRAM):
        from export.exporter import FORMATS, QUANTIZATIONS, ExportOptions, export_run, parse_list, print_progress
        from export.report import format_report, problems
        from models.errors import ModelConfigError

        if args.rebuild_delta:
            return rebuild_delta(args)
        if not args.run:
            raise ModelConfigError("pass --run RUN_DIR (a directory written by python -m app.train), or --rebuild-delta FILE")
        if args.format is None:
            formats = () if args.delta else ("tflite",)
        else:
            formats = parse_list(args.format, FORMATS, "format")
        options = ExportOptions(
            formats=formats,
            quantize=parse_list(args.quantize, QUANTIZATIONS, "quantization"),
            out=args.out,
            max_images=args.max_images,
            data_dir=args.data_dir,
            calibration_batches=args.calibration_batches,
            int8_io=args.int8_io,
            min_agreement=args.min_agreement,
            min_agreement_quantized=args.min_agreement_quantized,
            threads=args.threads,
            latency_runs=args.latency_runs,
            model=args.model,
            routing=args.routing,
            delta=args.delta,
            baselines=not args.no_baselines,
            log=None if args.quiet else print_progress,
        )
        report = export_run(args.run, options)
        print(format_report(report))
        print(f"\n  report: {report['report_file']}")
        failed = problems(report)
        for line in failed:
            print(f"{PROGRAM}: error: {line}", file=sys.stderr)
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
