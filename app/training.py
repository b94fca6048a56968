"""From a validated TrainConfig to a finished run directory: data, model, fit, metrics.

The way of the data: config -> `pipelines.load_dataset` gives (image, label) batches ->
`models.strategies` builds the network -> `model.fit` with callbacks -> the run directory.
"""

import dataclasses
import math
import os
import shlex
import shutil
import sys
import time

import keras
import numpy as np

from app.callbacks import HistoryFile, LearningRateLogger, ThroughputMeter, WholeBackupAndRestore, resume_epoch
from app.devices import distribution_strategy
from app import distributed
from app.regularization import report_distances
from app.subsets import apply_train_fraction
from models.backbones import build_backbone
from models.errors import ModelConfigError
from models.strategies import StrategyOptions, get_strategy
from models.transfer_trainer import logits_of
from rundir import layout as rd
from rundir.config import TrainConfig
from rundir.data import load_data  # noqa: F401  (app.training.load_data: the dataset of a run)
from rundir.sample import write_sample

DECATHLON_IMAGE_SIZE = 72
# Fewer optimizer steps than this leave a new classifier under-trained (issue "A recipe that transfers":
# 245 images, 3 epochs at batch 64 = 12 steps gave 78 % where more steps give more); the run warns.
FEW_STEPS = 100


def check_backbone_name(name):
    """Fail before any data is read when the backbone name is unknown."""
    from models.backbones import BACKBONES

    if name not in BACKBONES:
        raise ModelConfigError(f"unknown backbone {name!r}; choose one of: {', '.join(sorted(BACKBONES))}")


def resolve_image_size(config, bundle, backbone):
    """--image-size, else the dataset's natural size (Decathlon: 72), else the backbone's."""
    if config.image_size:
        return int(config.image_size)
    if str(bundle.policy).startswith("decathlon"):
        return DECATHLON_IMAGE_SIZE
    return int(backbone.default_image_size)


def resolve_normalization(config, bundle, backbone):
    """Input normalisation for the model's first layer.

    `auto` (default): a backbone loaded with pretrained weights gets the preprocessing its source
    training used (for instance ImageNet mean/std for the CIFAR ResNets, Caffe BGR means for
    SqueezeNet); a randomly initialised backbone, or one without a declared source preprocessing
    (the Decathlon ResNet-26, whose authors normalise each dataset with its own statistics), gets
    the dataset's statistics. `source` and `dataset` force one or the other.
    """
    mode = config.extra.get("normalize", "auto")
    dataset_stats = {"mean": list(bundle.mean), "std": list(bundle.std), "scale": 1.0 / 255.0}
    source = backbone.source_normalization
    if mode == "dataset" or source is None:
        return dataset_stats, "dataset"
    if mode == "source" or backbone.weights_source != "random":
        return dict(source), "source"
    return dataset_stats, "dataset"


def strategy_options(config):
    return StrategyOptions(k=config.k, bn=config.bn, dropout=config.dropout, extra=dict(config.extra))


def build_model(config, bundle, num_blocks_check=True):
    """Backbone + strategy -> (compiled-ready model, backbone, image size, normalisation source)."""
    strategy = get_strategy(config.strategy)
    backbone = build_backbone(config.backbone, weights=config.weights)
    options = strategy_options(config)
    strategy.check(options, len(backbone.blocks))
    image_size = resolve_image_size(config, bundle, backbone)
    normalization, normalization_source = resolve_normalization(config, bundle, backbone)
    model = strategy.build(backbone, bundle.num_classes, normalization, options)
    return model, backbone, image_size, normalization_source


def predict_labels(model, dataset):
    """(predicted labels, true labels) over a finite dataset of (images, labels)."""
    predicted, truth = [], []
    for images, labels in dataset:
        logits = keras.ops.convert_to_numpy(logits_of(model(images, training=False)))
        predicted.append(np.argmax(logits, axis=-1))
        truth.append(np.asarray(labels))
    if not predicted:
        return np.zeros((0,), np.int64), np.zeros((0,), np.int64)
    return np.concatenate(predicted), np.concatenate(truth)


def accuracy_of(model, dataset):
    """(accuracy in [0, 1], number of images)."""
    predicted, truth = predict_labels(model, dataset)
    if truth.size == 0:
        return float("nan"), 0
    return float(np.mean(predicted == truth)), int(truth.size)


def evaluation_splits(bundle, requested=None):
    """The labelled splits to evaluate, in train / validation / test order."""
    labelled = list(getattr(bundle, "labelled_splits", bundle.split_sizes))
    order = [s for s in ("train", "validation", "test") if s in labelled]
    order += [s for s in labelled if s not in order]
    if requested:
        return [s for s in order if s in requested]
    return order


def evaluate_run_model(model, bundle, image_size, batch_size, splits):
    """{split: accuracy} and {split: images} for `splits`, with evaluation preprocessing."""
    accuracy, images = {}, {}
    for split in splits:
        dataset = bundle.batches(split, batch_size, training=False, image_size=image_size)
        accuracy[split], images[split] = accuracy_of(model, dataset)
    return accuracy, images


def print_summary(title, accuracy, images, extra_lines=(), stream=sys.stdout):
    """A small table: split, images, accuracy."""
    print(f"\n{title}", file=stream)
    print(f"  {'split':<12}{'images':>8}{'accuracy':>10}", file=stream)
    for split, value in accuracy.items():
        print(f"  {split:<12}{images.get(split, 0):>8}{value:>10.4f}", file=stream)
    for line in extra_lines:
        print(f"  {line}", file=stream)


def train(config: TrainConfig, run_directory, resume=False, verbose=1):
    """Train `config` into `run_directory`; with `resume`, continue from its last finished epoch.

    Returns the metrics dictionary written to metrics.json.
    """
    config.validate()
    get_strategy(config.strategy)
    check_backbone_name(config.backbone)
    keras.utils.set_random_seed(config.seed)
    bundle = apply_train_fraction(config, load_data(config))
    distribution = distribution_strategy(config.distribute)

    from app.trainer import build_trainer

    with distribution.scope():
        training = build_trainer(config, bundle, run_directory)
    network, backbone, model, strategy = training.network, training.backbone, training.trainer, training.strategy
    image_size, normalization_source = training.image_size, training.normalization_source

    os.makedirs(run_directory, exist_ok=True)
    rd.remove_leftovers(run_directory)  # of a write an earlier process did not finish
    if not resume:
        config.save(rd.path(run_directory, rd.CONFIG_FILE))
    rd.write_json(
        run_directory,
        rd.DATASET_FILE,
        {
            "name": bundle.name,
            "class_names": list(bundle.class_names),
            "split_sizes": dict(bundle.split_sizes),
            "image_size": image_size,
            "normalization": normalization_source,
        },
    )

    # The batches of epoch e depend only on (seed, e): a resumed fit gets the epochs it has left, as the
    # uninterrupted run would have had them (`DatasetBundle.batches(epochs=...)`).
    backup_dir = rd.path(run_directory, rd.BACKUP_DIR)
    first_epoch = resume_epoch(backup_dir) if resume else 0
    steps = bundle.num_batches("train", config.batch_size)
    line = few_steps_warning(config, steps)
    if line:
        print(line, file=sys.stderr)
    train_data = bundle.batches(
        "train", config.batch_size, training=True, image_size=image_size, seed=config.seed, epochs=(first_epoch, config.epochs)
    )
    validation_split = "validation" if "validation" in evaluation_splits(bundle) else None
    validation_data = (
        bundle.batches(validation_split, config.batch_size, training=False, image_size=image_size)
        if validation_split
        else None
    )
    throughput = ThroughputMeter(bundle.split_sizes["train"])
    backup = WholeBackupAndRestore(backup_dir, save_freq="epoch", delete_checkpoint=False)
    history_file = HistoryFile(rd.path(run_directory, rd.HISTORY_FILE), first_epoch)
    callbacks = [
        backup,
        throughput,
        LearningRateLogger(),
        keras.callbacks.TerminateOnNaN(),
    ]
    callbacks += distributed.callbacks(network, distribution)  # BatchNorm over the global batch
    splits = evaluation_splits(bundle, config.extra.get("eval_splits"))
    context = training.context(config, bundle, run_directory, validation_data, splits)
    callbacks += strategy.callbacks(context)
    callbacks += [
        history_file,
        keras.callbacks.TensorBoard(rd.path(run_directory, rd.LOGS_DIR), update_freq="epoch", write_graph=False),
        backup.saver(),  # last: an epoch's checkpoint follows its history.csv row
    ]
    strategy.before_fit(context)
    started = time.perf_counter()
    try:
        history = model.fit(
            train_data,
            validation_data=validation_data,
            epochs=config.epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished epochs are kept in {rd.path(run_directory, rd.BACKUP_DIR)}; "
            f"continue with: python -m app.train --resume {shlex.quote(run_directory)}",
            file=sys.stderr,
        )
        raise
    fit_seconds = time.perf_counter() - started
    losses = history.history.get("loss", [])
    if any(not math.isfinite(value) for value in losses):
        raise ModelConfigError(
            "training diverged: the loss became NaN or infinite, so no model was saved; lower the learning rate "
            f"(--lr {config.lr:g} now, try --lr {config.lr / 10:g})"
        )

    strategy.after_fit(context)
    network = context.network  # after_fit may hand back another network (TransTailor: the pruned one)

    with rd.replacing(rd.path(run_directory, rd.MODEL_FILE)) as tmp:
        network.save(tmp)
    write_sample(run_directory, bundle, image_size, seed=config.seed)  # evaluate and export without the data
    distances = report_distances(network, run_directory)
    accuracy, images = evaluate_run_model(network, bundle, image_size, config.batch_size, splits)
    context.accuracy = dict(accuracy)
    with rd.staging(run_directory) as staged:  # the strategy's files (compact.keras, heatmap) land whole or not at all
        files = rd.run_files(strategy)
        extra_metrics = strategy.finish(dataclasses.replace(context, path=lambda name: rd.declared_path(staged, name, files)))
    metrics = {
        "accuracy": accuracy,
        "images": images,
        "train_images_per_second": throughput.images_per_second,
        "epochs": config.epochs,
        "epochs_run_in_this_session": len(history.epoch),
        "fit_seconds_this_session": fit_seconds,
        "final_train_loss": history_file.history["loss"][-1] if history_file.history.get("loss") else None,
        "image_size": image_size,
        "normalization": normalization_source,
        "backbone_weights": backbone.weights_source,
        "trainable_parameters": int(sum(np.prod(v.shape) for v in network.trainable_weights)),
        "total_parameters": int(network.count_params()),
        "history": history_file.history,  # the whole run's, also when it was resumed (history.csv's rows)
        "skipped_images": _skipped_count(bundle),
        "distribute": config.distribute,
        "replicas": int(distribution.num_replicas_in_sync),
        "distance_to_w0": distances,
        **extra_metrics,
    }
    rd.write_json(run_directory, rd.METRICS_FILE, metrics)
    if os.path.isdir(rd.path(run_directory, rd.BACKUP_DIR)):
        shutil.rmtree(rd.path(run_directory, rd.BACKUP_DIR), ignore_errors=True)
    distributed.finish_worker(run_directory, config.distribute)  # a non-chief worker's own directory
    return metrics


def few_steps_warning(config, steps_per_epoch):
    """One line when the run takes fewer than `FEW_STEPS` optimizer steps, naming the fix ("" otherwise)."""
    total = int(steps_per_epoch) * int(config.epochs)
    if total >= FEW_STEPS:
        return ""
    epochs = math.ceil(FEW_STEPS / max(1, int(steps_per_epoch)))
    return (
        f"warning: only {total} optimizer steps ({config.epochs} epochs of {steps_per_epoch} batches of {config.batch_size}): "
        f"too few for a new classifier to train; use --epochs {epochs} or more (or a smaller --batch-size)"
    )


def _skipped_count(bundle):
    skipped = getattr(bundle, "skipped", 0)
    return len(skipped) if isinstance(skipped, (list, tuple, dict)) else int(skipped or 0)
