"""python -m app.evaluate: accuracy of a finished run, or of a pretrained backbone on its source classes.

Examples:
    python -m app.evaluate --run runs/<run> [--split test] [--data-dir MOVED/DATA]
    python -m app.evaluate --backbone resnet20 --dataset folder --data-dir ../shared/data/cifar10-sample/test
    python -m app.evaluate --backbone mobilenet_v2 --images ../shared/data/imagenet-check/cat.bmp [more ...]
"""

import argparse
import sys

from app import run_dir as rd
from app.errors import one_line_errors
from models.errors import ModelConfigError

PROGRAM = "python -m app.evaluate"


def build_parser():
    p = argparse.ArgumentParser(prog=PROGRAM, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="run directory written by python -m app.train")
    p.add_argument("--split", help="split to evaluate (default: every labelled split the run evaluated)")
    p.add_argument("--batch-size", type=int, help="evaluation batch size (default: the run's)")
    p.add_argument("--data-dir", help="with --run: the run's data at its new place (default: where its config.json says; where it is gone, "
                                      "the images its sample.npz keeps); without --run: a folder of images of the backbone's source classes")
    src = p.add_argument_group("without --run: the pretrained backbone with its own source classifier")
    src.add_argument("--backbone", help="registered backbone with a source classifier, e.g. resnet20")
    src.add_argument("--weights", default="default", help="'default' or a weights file")
    src.add_argument("--dataset", help="dataset name, e.g. folder")
    src.add_argument("--tfds-data-dir")
    src.add_argument("--image-size", type=int, help="input size (default: the backbone's)")
    src.add_argument("--images", nargs="+", metavar="FILE", help="photographs to classify with the source classifier (top-5 classes each)")
    src.add_argument("--top", type=int, default=5, help="with --images: how many classes to print (default 5)")
    return p


def classify_images(args):
    """The top classes of the backbone's own (source) classifier for each of `args.images`.

    Returns:
        [(file, [(class name, probability), ...]), ...]; an unreadable file gets an empty list and a
        warning on stderr (the others are still classified).
    """
    import numpy as np

    from models.backbones import build_backbone
    from models.classifier import assemble_classifier
    from pipelines.images import decode_file

    backbone = build_backbone(args.backbone, weights=args.weights)
    if backbone.source_classifier is None:
        raise ModelConfigError(
            f"backbone {args.backbone} (weights {backbone.weights_source}) has no source classifier: "
            "pass a weights file that holds it (the ImageNet file without '_no_top')"
        )
    model = assemble_classifier(backbone, use_source_classifier=True)
    size = args.image_size or backbone.default_image_size
    results = []
    for file in args.images:
        image = decode_file(file, size)
        if image is None:
            print(f"{PROGRAM}: warning: {file} is not a readable image; skipped", file=sys.stderr)
            results.append((file, []))
            continue
        logits = np.asarray(model.predict(image[None].astype("float32"), verbose=0))[0]
        probabilities = np.exp(logits - logits.max())
        probabilities /= probabilities.sum()
        top = np.argsort(-probabilities)[: max(1, args.top)]
        results.append((file, [(backbone.source_class_names[i], float(probabilities[i])) for i in top]))
    return results


def evaluate_run(run_directory, split=None, batch_size=None, data_dir=None):
    """Reload `<run>/model.keras` with safe_mode on and recompute accuracy per split.

    The data: `data_dir` (moved data), else where config.json says, else the run's sample.npz (one note on stderr).
    """
    from app.config import TrainConfig
    from app.training import evaluate_run_model, evaluation_splits
    from rundir.data import load_run_data
    from rundir.run import load_keras_model

    rd.require_run(run_directory, rd.CONFIG_FILE, rd.MODEL_FILE, rd.DATASET_FILE)
    config = TrainConfig.load(rd.path(run_directory, rd.CONFIG_FILE))
    dataset_info = rd.read_json(run_directory, rd.DATASET_FILE)
    model = load_keras_model(rd.path(run_directory, rd.MODEL_FILE))  # one line if truncated or foreign
    bundle = load_run_data(run_directory, config, data_dir)
    splits = evaluation_splits(bundle, [split] if split else config.extra.get("eval_splits"))
    if split and split not in splits:
        raise ModelConfigError(f"split {split!r} has no labels in this dataset; choose one of {', '.join(evaluation_splits(bundle))}")
    if not splits:
        splits = evaluation_splits(bundle)
    return evaluate_run_model(model, bundle, dataset_info["image_size"], batch_size or config.batch_size, splits)


def evaluate_source(args):
    """Accuracy of a pretrained backbone's own classifier on a dataset whose classes it knows."""
    from app.training import accuracy_of, evaluation_splits, load_data, resolve_image_size
    from app.config import TrainConfig
    from models.backbones import build_backbone
    from models.classifier import assemble_classifier

    if not args.backbone:
        raise ModelConfigError("pass --run RUN_DIR, or --backbone NAME with --dataset/--data-dir to evaluate a pretrained backbone")
    backbone = build_backbone(args.backbone, weights=args.weights)
    if backbone.source_classifier is None:
        raise ModelConfigError(f"backbone {args.backbone} has no source classifier; evaluate a trained run with --run RUN_DIR")
    config = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, tfds_data_dir=args.tfds_data_dir, image_size=args.image_size)
    bundle = load_data(config)
    source = [name.lower() for name in backbone.source_class_names]
    unknown = [name for name in bundle.class_names if name.lower() not in source]
    if unknown:
        raise ModelConfigError(
            f"classes {unknown[:3]} are not among {args.backbone}'s source classes ({', '.join(backbone.source_class_names)}); "
            "evaluate a trained run with --run instead"
        )
    remap = [source.index(name.lower()) for name in bundle.class_names]
    model = assemble_classifier(backbone, len(source), use_source_classifier=True)
    image_size = resolve_image_size(config, bundle, backbone)
    import numpy as np
    import tensorflow as tf

    table = tf.constant(np.asarray(remap, np.int32))
    accuracy, images = {}, {}
    for split in evaluation_splits(bundle):
        data = bundle.batches(split, args.batch_size or 128, training=False, image_size=image_size)
        data = data.map(lambda x, y: (x, tf.gather(table, tf.cast(y, tf.int32))))
        accuracy[split], images[split] = accuracy_of(model, data)
    total = sum(images.values())
    if len(images) > 1 and total:
        accuracy["all"] = sum(accuracy[s] * images[s] for s in images) / total
        images["all"] = total
    return accuracy, images


def main(argv=None):
    args = build_parser().parse_args(argv)
    from app.training import print_summary

    with one_line_errors(PROGRAM):
        if args.run:
            accuracy, images = evaluate_run(args.run, args.split, args.batch_size, args.data_dir)
            print_summary(f"run {args.run} (model.keras reloaded with safe_mode=True)", accuracy, images)
        elif args.images:
            for file, top in classify_images(args):
                print(file)
                for name, probability in top:
                    print(f"  {probability:6.1%}  {name}")
        else:
            accuracy, images = evaluate_source(args)
            print_summary(f"pretrained {args.backbone} with its source classifier", accuracy, images)
    return 0


if __name__ == "__main__":
    sys.exit(main())
