"""From a validated TrainConfig to a finished run directory: data, model, fit, metrics.

The way of the data: config -> `pipelines.load_dataset` gives (image, label) batches ->
`models.strategies` builds the network -> `model.fit` with callbacks -> the run directory.
"""

import math
import os
import shutil
import sys
import time

import keras
import numpy as np

from app import run_dir as rd
from app.callbacks import LearningRateLogger, RoutingMonitor, ThroughputMeter
from app.config import TrainConfig
from app.devices import distribution_strategy
from app.regularization import regularization_terms, report_distances
from app.subsets import apply_train_fraction
from models.backbones import build_backbone
from models.errors import ModelConfigError
from models.backbones.base import block_name
from models.compact import compact_classifier, fixed_decisions
from models.spottune import POLICY_NAME, set_inference_mode
from models.split_optimizer import SplitOptimizer
from models.strategies import StrategyOptions, get_strategy
from models.strategies.spottune import DEFAULT_TAU
from models.temperature_schedule import TemperatureSchedule, gumbel_gates
from models.transfer_trainer import TransferTrainer, logits_of

DECATHLON_IMAGE_SIZE = 72
DEFAULT_POLICY_LR = 0.01  # SpotTune authors' code
DEFAULT_POLICY_WEIGHT_DECAY = 1e-3  # SpotTune authors' code
ROUTING_FILE = "routing_heatmap.png"
COMPACT_FILE = "compact.keras"
ROUTED_STRATEGY_EVAL_SPLIT_ORDER = ("test", "validation", "train")


def check_backbone_name(name):
    """Fail before any data is read when the backbone name is unknown."""
    from models.backbones import BACKBONES

    if name not in BACKBONES:
        raise ModelConfigError(f"unknown backbone {name!r}; choose one of: {', '.join(sorted(BACKBONES))}")


def load_data(config):
    """The DatasetBundle a config asks for."""
    from pipelines import load_dataset

    return load_dataset(config.dataset, data_dir=config.data_dir, tfds_data_dir=config.tfds_data_dir, seed=config.seed)


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


def make_optimizer(config, steps_per_epoch, routed=False):
    """SGD with momentum (or Adam) on a linear-warmup + cosine schedule over the whole run.

    For routed (SpotTune) strategies the policy network gets its own optimizer (authors' code:
    SGD, lr 0.01, momentum 0.9, weight decay 1e-3, against lr 0.1 for the network), combined
    with the network's in a `SplitOptimizer`.
    """
    main = _network_optimizer(config, steps_per_epoch)
    if not routed:
        return main
    policy = keras.optimizers.SGD(
        learning_rate=float(config.extra.get("policy_lr", DEFAULT_POLICY_LR)),
        momentum=0.9,
        weight_decay=float(config.extra.get("policy_weight_decay", DEFAULT_POLICY_WEIGHT_DECAY)) or None,
    )
    return SplitOptimizer(main, policy, [POLICY_NAME + "/"])


def _network_optimizer(config, steps_per_epoch):
    total_steps = max(1, steps_per_epoch * config.epochs)
    warmup_steps = min(config.warmup_epochs, max(config.epochs - 1, 0)) * steps_per_epoch
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=config.lr if warmup_steps == 0 else 0.0,
            decay_steps=max(1, total_steps - warmup_steps),
            warmup_target=config.lr if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    else:
        rate = config.lr
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=rate)
    return keras.optimizers.SGD(learning_rate=rate, momentum=config.momentum)


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

    with distribution.scope():
        network, backbone, image_size, normalization_source = build_model(config, bundle)
        terms = get_strategy(config.strategy).training_terms(network, strategy_options(config))
        terms = list(terms) + regularization_terms(config, network, backbone, bundle, run_directory, image_size)
        model = TransferTrainer(network, terms=terms, name="trainer")
        steps_per_epoch = max(1, math.ceil(bundle.split_sizes["train"] / config.batch_size))
        routed = get_strategy(config.strategy).routed
        model.compile(
            optimizer=make_optimizer(config, steps_per_epoch, routed=routed),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )

    os.makedirs(run_directory, exist_ok=True)
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

    train_data = bundle.batches("train", config.batch_size, training=True, image_size=image_size, seed=config.seed)
    validation_split = "validation" if "validation" in evaluation_splits(bundle) else None
    validation_data = (
        bundle.batches(validation_split, config.batch_size, training=False, image_size=image_size)
        if validation_split
        else None
    )
    throughput = ThroughputMeter(bundle.split_sizes["train"])
    callbacks = [
        keras.callbacks.BackupAndRestore(rd.path(run_directory, rd.BACKUP_DIR), save_freq="epoch", delete_checkpoint=False),
        throughput,
        LearningRateLogger(),
        keras.callbacks.TerminateOnNaN(),
    ]
    if routed:
        callbacks += routing_callbacks(config, network, bundle, image_size, run_directory, validation_data)
    callbacks += [
        keras.callbacks.CSVLogger(rd.path(run_directory, rd.HISTORY_FILE), append=True),
        keras.callbacks.TensorBoard(rd.path(run_directory, rd.LOGS_DIR), update_freq="epoch", write_graph=False),
    ]
    started = time.perf_counter()
    try:
        history = model.fit(
            train_data, validation_data=validation_data, epochs=config.epochs, callbacks=callbacks, verbose=verbose, shuffle=False
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished epochs are kept in {rd.path(run_directory, rd.BACKUP_DIR)}; "
            f"continue with: python -m app.train --resume {run_directory}",
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

    network.save(rd.path(run_directory, rd.MODEL_FILE))
    distances = report_distances(network, run_directory)
    splits = evaluation_splits(bundle, config.extra.get("eval_splits"))
    accuracy, images = evaluate_run_model(network, bundle, image_size, config.batch_size, splits)
    extra_metrics = {}
    if routed:
        extra_metrics = finish_routed_run(config, network, bundle, image_size, run_directory, accuracy, splits)
    metrics = {
        "accuracy": accuracy,
        "images": images,
        "train_images_per_second": throughput.images_per_second,
        "epochs": config.epochs,
        "epochs_run_in_this_session": len(history.epoch),
        "fit_seconds_this_session": fit_seconds,
        "final_train_loss": history.history["loss"][-1] if history.history.get("loss") else None,
        "image_size": image_size,
        "normalization": normalization_source,
        "backbone_weights": backbone.weights_source,
        "trainable_parameters": int(sum(np.prod(v.shape) for v in network.trainable_weights)),
        "total_parameters": int(network.count_params()),
        "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        "skipped_images": _skipped_count(bundle),
        "distribute": config.distribute,
        "replicas": int(distribution.num_replicas_in_sync),
        "distance_to_w0": distances,
        **extra_metrics,
    }
    rd.write_json(run_directory, rd.METRICS_FILE, metrics)
    if os.path.isdir(rd.path(run_directory, rd.BACKUP_DIR)):
        shutil.rmtree(rd.path(run_directory, rd.BACKUP_DIR), ignore_errors=True)
    return metrics


def routing_callbacks(config, network, bundle, image_size, run_directory, validation_data):
    """Temperature schedule and per-epoch routing logs for SpotTune strategies."""
    extra = config.extra
    callbacks = [
        TemperatureSchedule(
            initial=float(extra.get("tau", DEFAULT_TAU)),
            schedule=extra.get("tau_schedule", "constant"),
            rate=float(extra.get("tau_rate", 0.05)),
            minimum=float(extra.get("tau_min", 0.5)),
            gates=gumbel_gates(network),
        )
    ]
    monitor_data = validation_data or bundle.batches("train", config.batch_size, training=False, image_size=image_size)
    callbacks.append(RoutingMonitor(network, monitor_data, bundle.class_names, rd.path(run_directory, rd.LOGS_DIR, "routing")))
    return callbacks


def finish_routed_run(config, network, bundle, image_size, run_directory, accuracy, splits):
    """Routing statistics, heatmap, sampled accuracy, and (global policies) the compact model."""
    from app.routing_report import routing_statistics, save_heatmap

    split = next((s for s in ROUTED_STRATEGY_EVAL_SPLIT_ORDER if s in splits), splits[0])
    data = bundle.batches(split, config.batch_size, training=False, image_size=image_size)
    statistics = routing_statistics(network, data, bundle.class_names)
    statistics["split"] = split
    save_heatmap(statistics, rd.path(run_directory, ROUTING_FILE))
    routing = {"inference": "deterministic", **statistics}

    set_inference_mode(network, "sample")
    sampled, _ = evaluate_run_model(network, bundle, image_size, config.batch_size, [split])
    set_inference_mode(network, "deterministic")
    routing["accuracy_sampled"] = {split: sampled[split]}

    strategy = get_strategy(config.strategy)
    if strategy.policy == "global":
        decisions = fixed_decisions(network)
        forced = config.k is not None and sum(decisions) != config.k
        if forced:
            decisions = fixed_decisions(network, k=config.k)
        policy_logits = keras.ops.convert_to_numpy(network.get_layer(POLICY_NAME).logits)
        probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(policy_logits, axis=-1))[:, 1]
        routing["policy_probabilities"] = [round(float(p), 6) for p in probabilities]
        compact = compact_classifier(network, decisions=decisions)
        compact.save(rd.path(run_directory, COMPACT_FILE))
        compact_accuracy, _ = evaluate_run_model(compact, bundle, image_size, config.batch_size, splits)
        routing.update(
            {
                "decisions": decisions,
                "finetuned_blocks": [i for i, d in enumerate(decisions) if d],
                "finetuned_block_names": [block_name(i) for i, d in enumerate(decisions) if d],
                "forced_top_k": bool(forced),
                "compact_file": COMPACT_FILE,
                "compact_accuracy": compact_accuracy,
                "compact_parameters": int(compact.count_params()),
            }
        )
    return {"routing": routing}


def _skipped_count(bundle):
    skipped = getattr(bundle, "skipped", 0)
    return len(skipped) if isinstance(skipped, (list, tuple, dict)) else int(skipped or 0)
