"""App glue of the regularisers: flags, Fisher / attention caches in the run directory, distance report.

    <run>/w0.npz                 the starting point w0 of every trainable shared weight (written once)
    <run>/fisher.npz             diagonal Fisher at w0 (raw, as estimated), for *_fisher regularisers
    <run>/delta_attention.npz    channel attention (DELTA) and the loss rises behind it
    <run>/regularization.json    the resolved settings (defaults applied) and what the estimates cost
    <run>/distance_to_w0.png     ||w - w0|| per block at the end of the run (bar plot)

A resumed run (python -m app.train --resume) reuses w0, Fisher and attention from these files; its
SP terms also get w0 back from the resume checkpoint, where the terms keep it as weights.
"""

import json
import os
import sys

import numpy as np

from models.errors import ModelConfigError
from models.regularizers import DEFAULTS, PENALIZE, REGULARIZERS, build_penalty_terms, check_regularizer, get_regularizer, regularizer_flags
from rundir.layout import DISTANCE_PLOT, FISHER_FILE, REGULARIZATION_FILE, W0_FILE, replacing

# Flags kept in TrainConfig.extra (app.train's EXTRA_FLAGS lists them): every regulariser's own, and the share of training images.
EXTRA_FLAGS = tuple(flag.name for flag in regularizer_flags()) + ("train_fraction",)


def add_regularization_flags(parser):
    """Adds the regularisation flags to an argparse parser (once; a second call does nothing)."""
    if "--regularizer" in parser._option_string_actions:
        return parser
    group = parser.add_argument_group("regularisation (Li et al. ICML 2018; DELTA, ICLR 2019)")
    group.add_argument("--regularizer", choices=REGULARIZERS, help="penalty added to the loss (default none): " + ", ".join(REGULARIZERS))
    group.add_argument(
        "--alpha",
        type=float,
        help="weight of the penalty on the pretrained weights (defaults: " + ", ".join(f"{n} {d.alpha:g}" for n, d in DEFAULTS.items() if n != "none") + ")",
    )
    group.add_argument("--beta", type=float, help="weight of beta/2 ||w_new||^2 on the new classifier (defaults: l2 1e-3, others 0.01; SpotTune policy: its own weight decay)")
    group.add_argument("--penalize", choices=PENALIZE, help="kernels (conv and dense kernels only, the authors' choice; default) or all (BatchNorm and biases too)")
    group.add_argument("--fisher-batches", type=int, help="training batches for the Fisher estimate of *_fisher (default 20; per-example gradients)")
    for flag in regularizer_flags():
        group.add_argument(flag.option, help=flag.help, **({"choices": flag.choices} if flag.choices else {"type": flag.type}))
    group.add_argument("--train-fraction", type=float, help="train on a seeded, stratified share of the training images, e.g. 0.1 (default 1)")
    return parser


def settings_of(config):
    """The regularisation settings of a TrainConfig, defaults applied, validated (one-line errors)."""
    name = config.regularizer or "none"
    check_regularizer(name, config.alpha, config.beta, config.penalize)
    extra = {}
    for flag in regularizer_flags():
        extra[flag.name] = config.extra.get(flag.name, flag.default)
        flag.check(extra[flag.name])
    if int(config.fisher_batches) < 1:
        raise ModelConfigError(f"--fisher-batches must be at least 1, got {config.fisher_batches}")
    fraction = config.extra.get("train_fraction")
    if fraction is not None and not 0.0 < float(fraction) <= 1.0:
        raise ModelConfigError(f"--train-fraction must be in (0, 1], got {fraction}; e.g. 0.1 for 10 % of the training images")
    defaults = DEFAULTS[name]
    return {
        "regularizer": name,
        "alpha": defaults.alpha if config.alpha is None else float(config.alpha),
        "beta": defaults.beta if config.beta is None else float(config.beta),
        "penalize": config.penalize or "kernels",
        "fisher_batches": int(config.fisher_batches),
        "defaults_source": defaults.source,
        **extra,
    }


def check_regularization(config):
    """Validate the regularisation settings before any data is read (raises ModelConfigError)."""
    settings_of(config)


def regularization_terms(config, network, backbone, bundle, run_directory, image_size, cache_directory=None, verbose=True):
    """The regulariser's `TrainingTerm`s for a freshly built `network`, with w0 / Fisher / attention cached.

    Call it inside the distribution scope, right after the network is built (it still holds the
    pretrained weights). Writes `w0.npz` (every run, even without a regulariser, for the distance
    report), the Fisher and attention caches when needed, and `regularization.json`. Fills
    `config.alpha`, `config.beta` and `config.penalize` with the values used, so config.json records them.

    Args:
        config: the run's TrainConfig.
        network: the freshly built network.
        backbone: its `Backbone` (stages for DELTA's hooks, source classifier for the Fisher).
        bundle: the DatasetBundle (training images for the Fisher and the attention).
        run_directory: where w0.npz and regularization.json go.
        image_size: the training image size.
        cache_directory: where the Fisher and attention caches go (default: `run_directory`).
        verbose: print what is estimated and how long it took.

    Returns:
        a list of TrainingTerms (empty for --regularizer none).
    """
    from models.regularizers.parts import hook_layer_names

    settings = settings_of(config)
    name = settings["regularizer"]
    regularizer = get_regularizer(name)
    needs = regularizer.needs
    hooks = hook_layer_names(backbone) if "attention" in needs else None
    if name != "none":
        config.alpha, config.beta, config.penalize = settings["alpha"], settings["beta"], settings["penalize"]
    cache_directory = cache_directory or run_directory
    os.makedirs(run_directory, exist_ok=True)
    os.makedirs(cache_directory, exist_ok=True)
    starts = _starting_point(network, run_directory)
    report = {"settings": settings, "w0_file": W0_FILE}
    fisher = attention = None
    if name == "none":
        _write_json(os.path.join(run_directory, REGULARIZATION_FILE), dict(report, terms=[]))
        return []
    if "fisher" in needs:
        fisher, report["fisher"] = _fisher(config, settings, network, backbone, bundle, image_size, cache_directory, verbose)
    if "attention" in needs:
        attention, report["attention"] = _attention(config, regularizer, settings, network, hooks, bundle, image_size, cache_directory, verbose)
    from models.strategies import get_strategy

    terms = build_penalty_terms(
        name,
        network,
        alpha=settings["alpha"],
        beta=settings["beta"],
        penalize=settings["penalize"],
        starts=starts,
        fisher=fisher,
        attention=attention,
        hooks=hooks,
        exclude_parts=get_strategy(config.strategy).own_parts,
        **regularizer.term_options(settings),
    )
    report["terms"] = [term.name for term in terms]
    _write_json(os.path.join(run_directory, REGULARIZATION_FILE), report)
    return terms


def _write_json(file, values):
    with replacing(file) as tmp, open(tmp, "w") as f:
        json.dump(values, f, indent=2, sort_keys=True, default=float)


def _load_npz(file):
    if not os.path.isfile(file):
        return {}
    with np.load(file) as data:
        return {key: data[key] for key in data.files}


def _save_npz(file, arrays):
    with replacing(file) as tmp:
        np.savez(tmp, **arrays)


def _numpy(variable):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(variable))


def _starting_point(network, run_directory):
    """{key: w0} of every trainable shared weight: from w0.npz where it matches, else the network now."""
    from models.regularizers.variables import keyed_variables, shared_variables

    file = os.path.join(run_directory, W0_FILE)
    saved = _load_npz(file)
    starts, changed = {}, False
    for key, variable in keyed_variables(shared_variables(network, "all")).items():
        value = saved.get(key)
        if value is None or tuple(value.shape) != tuple(variable.shape):
            value, changed = _numpy(variable), True
        starts[key] = value
    if changed or not saved:
        _save_npz(file, {**saved, **starts})
    return starts


def fisher_model(network, backbone, head="auto"):
    """(model image -> logits, head used) whose log-likelihood the Fisher is taken of.

    "auto": the backbone's source classifier on the network's head features when the backbone
    carries one (the CIFAR ResNets: the source task's log-likelihood, the closest we get to the
    authors' source-data Fisher), else the network's own new classifier (as initialised: F then
    measures the sensitivity of a random head's predictions). "source" / "target" force one.
    """
    import keras

    source = backbone.source_classifier
    if head in ("auto", "source") and source is not None:
        from models.classifier import call_site

        features = call_site(network, "head")[1]
        if features.shape[-1] == source.kernel.shape[0]:
            return keras.Model(network.input, source(features), name="fisher_source_model"), "source"
    if head == "source":
        raise ModelConfigError(f"--fisher-head source: backbone {backbone.name!r} has no source classifier; use --fisher-head auto or target")
    return network, "target"


def _fisher(config, settings, network, backbone, bundle, image_size, cache_directory, verbose):
    from models.regularizers.fisher import estimate_fisher, normalize_fisher
    from models.regularizers.variables import keyed_variables, shared_variables

    variables = keyed_variables(shared_variables(network, settings["penalize"]))
    file = os.path.join(cache_directory, FISHER_FILE)
    cached = _load_npz(file)
    meta_file = file + ".json"
    if cached and all(key in cached and cached[key].shape == tuple(v.shape) for key, v in variables.items()):
        raw = [cached[key] for key in variables]
        with open(meta_file) as f:
            info = dict(json.load(f), from_cache=True)
    else:
        model, head = fisher_model(network, backbone, settings["fisher_head"])
        batches = bundle.batches("train", config.batch_size, training=False, image_size=image_size, shuffle=True, seed=config.seed)
        if verbose:
            print(f"estimating the diagonal Fisher at w0 on {settings['fisher_batches']} training batches ({head} head, per-example gradients) ...", flush=True)
        estimate = estimate_fisher(model, list(variables.values()), batches, max_batches=settings["fisher_batches"])
        raw = estimate.fisher
        info = {
            "examples": estimate.examples,
            "seconds": estimate.seconds,
            "head": head,
            "data": "target training images, labels = the model's own predictions (the authors used source data)",
            "gradients": "per example",
        }
        _save_npz(file, dict(zip(variables, raw)))
        _write_json(meta_file, info)
        info["from_cache"] = False
        if verbose:
            print(f"  Fisher: {estimate.examples} examples in {estimate.seconds:.1f} s -> {file}", flush=True)
    scaled = normalize_fisher(raw) if settings["fisher_scale"] == "mean" else raw
    info.update({"scale": settings["fisher_scale"], "mean_raw": float(np.mean(np.concatenate([f.ravel() for f in raw]))) if raw else 0.0})
    return dict(zip(variables, scaled)), info


def _attention(config, regularizer, settings, network, hooks, bundle, image_size, cache_directory, verbose):
    from models.regularizers.channel_attention import estimate_channel_attention

    file = os.path.join(cache_directory, regularizer.attention_file)
    options = regularizer.attention_options(settings)
    cached = _load_npz(file)
    channels = [int(network.get_layer(name).output.shape[-1]) for name in hooks]
    if cached and all(f"attention|{h}" in cached and cached[f"attention|{h}"].shape == (c,) for h, c in zip(hooks, channels)):
        with open(file + ".json") as f:
            info = dict(json.load(f), from_cache=True)
        return [cached[f"attention|{h}"] for h in hooks], info
    if verbose:
        print(
            f"{regularizer.name}: training a new head on the frozen pretrained network ({options['head_epochs']} epochs), "
            f"then scoring {sum(channels)} channels of {', '.join(hooks)} on {options['score_batches_count']} batches ...",
            flush=True,
        )

    def batches(seed):
        return bundle.batches("train", config.batch_size, training=False, image_size=image_size, shuffle=True, seed=seed)

    estimate = estimate_channel_attention(
        network,
        hooks,
        batches(config.seed),
        batches(config.seed + 1),
        bundle.num_classes,
        seed=config.seed,
        **options,
    )
    arrays = {f"attention|{h}": a for h, a in zip(hooks, estimate.attention)}
    arrays.update({f"rises|{h}": r for h, r in zip(hooks, estimate.rises)})
    _save_npz(file, arrays)
    info = {"hooks": hooks, "head_accuracy": estimate.head_accuracy, "base_loss": estimate.base_loss, "seconds": estimate.seconds}
    _write_json(file + ".json", info)
    if verbose:
        print(f"  attention: head accuracy {estimate.head_accuracy:.3f}, {estimate.seconds:.1f} s -> {file}", flush=True)
    return estimate.attention, dict(info, from_cache=False)


def report_distances(network, run_directory, stream=sys.stdout, plot=True):
    """Prints ||w - w0||_2 per block (absolute and relative to ||w0||), plots it, returns the table.

    Reads w0 from `<run>/w0.npz` (written by `regularization_terms`); parts are the top-level
    layers (stem, block_01.., head); under SpotTune a block's weights are its fine-tuned copy's.

    Returns:
        {part: {"distance", "norm_w0", "relative", "parameters"}, "total": {...}}: store it in
        metrics.json (e.g. as metrics["distance_to_w0"]); {} when the run has no w0.npz.
    """
    from models.regularizers.variables import distances_by_part, keyed_variables, shared_variables

    starts = _load_npz(os.path.join(run_directory, W0_FILE))
    if not starts:
        return {}
    current = {key: _numpy(v) for key, v in keyed_variables(shared_variables(network, "all")).items()}
    table = distances_by_part(current, starts)
    if not table:
        return {}
    total_sq = sum(row["distance"] ** 2 for row in table.values())
    norm_sq = sum(row["norm_w0"] ** 2 for row in table.values())
    table["total"] = {
        "distance": float(np.sqrt(total_sq)),
        "norm_w0": float(np.sqrt(norm_sq)),
        "relative": float(np.sqrt(total_sq / norm_sq)) if norm_sq > 0 else float("nan"),
        "parameters": int(sum(row["parameters"] for row in table.values())),
    }
    print("\ndistance to the starting point w0 (trainable pretrained weights)", file=stream)
    print(f"  {'part':<12}{'weights':>10}{'||w-w0||':>12}{'relative':>11}", file=stream)
    for part, row in table.items():
        print(f"  {part:<12}{row['parameters']:>10,}{row['distance']:>12.4f}{row['relative']:>11.4f}", file=stream)
    if plot:
        _plot_distances({k: v for k, v in table.items() if k != "total"}, os.path.join(run_directory, DISTANCE_PLOT))
    return table


def _plot_distances(table, file):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    parts = list(table)
    figure, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.5 * len(parts) + 2), 6), sharex=True)
    axes[0].bar(parts, [table[p]["distance"] for p in parts], color="tab:blue")
    axes[0].set_ylabel("||w - w0||_2")
    axes[1].bar(parts, [table[p]["relative"] for p in parts], color="tab:orange")
    axes[1].set_ylabel("||w - w0|| / ||w0||")
    axes[1].tick_params(axis="x", rotation=60)
    axes[0].set_title("distance to the pretrained weights, per block")
    figure.tight_layout()
    with replacing(file) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
    return file
