"""Regularisers of fine-tuning: SP penalties (L2, L2-SP, L2-SP-Fisher, L1-SP, GL-SP, GL-SP-Fisher) and DELTA.

Each penalty family is one module whose function returns the *raw* penalty (no trade-off weight)
and whose `TrainingTerm` multiplies it by alpha (Transfer-Learning-Library style: the weights live
in the config). `REGISTRY` maps a regulariser name to a `Regularizer` that declares its defaults and
what it needs (w0, Fisher, attention); `build_penalty_terms` gives the terms added to the task
loss, each logged as a metric under its name. Method pages: docs/methods/l2_sp.md, l1_sp.md,
gl_sp.md, delta.md.

    name          terms (metric names)     formula
    none          -                        -
    l2            l2, l2_new               alpha/2 ||w_S||^2 + beta/2 ||w_new||^2
    l2sp          l2sp, l2_new             alpha/2 ||w_S - w_S^0||^2 + beta/2 ||w_new||^2
    l2sp_fisher   l2sp_fisher, l2_new      alpha/2 sum_j F_j (w_j - w_j^0)^2 + beta/2 ||w_new||^2
    l1sp          l1sp, l2_new             alpha sum_j |w_j - w_j^0| + beta/2 ||w_new||^2
    gl_sp         gl_sp, l2_new            alpha sum_g sqrt(n_g) ||w_g - w_g^0|| + beta/2 ||w_new||^2
    gl_sp_fisher  gl_sp_fisher, l2_new     alpha sum_g sqrt(n_g) sqrt(sum_{j in g} F_j (w_j - w_j^0)^2 + 1e-16) + beta/2 ||w_new||^2
    delta         delta, l2_new            alpha mean_x sum_j sum_c C_j W_jc 1/2 ||FM_jc(w) - FM_jc(w0)||^2 / (h w) + beta/2 ||w_new||^2

References: Li, Grandvalet, Davoine, ICML 2018 (https://arxiv.org/abs/1802.01483);
Li et al., ICLR 2019 (https://arxiv.org/abs/1901.09229).

The registry itself needs no Keras (the command line reads it before TensorFlow loads): the term
classes are imported when a term is built.
"""

import importlib
import typing

from models.errors import ModelConfigError
from models.flags import Flag

# The penalty classes, imported on first use: `from models.regularizers import L2SPPenalty` still works.
_TERM_MODULES = {
    "DeltaPenalty": "models.regularizers.delta",
    "GroupLassoSPPenalty": "models.regularizers.group_lasso_sp",
    "L1SPPenalty": "models.regularizers.l1_sp",
    "L2SPPenalty": "models.regularizers.l2_sp",
    "WeightDecayPenalty": "models.regularizers.weight_decay",
}
REDUCTIONS = ("mean", "sum")  # DELTA's feature term over the batch (models.regularizers.delta)
PENALIZE = ("kernels", "all")  # which weights a term covers (models.regularizers.variables)


def __getattr__(name):
    if name in _TERM_MODULES:
        return getattr(importlib.import_module(_TERM_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Defaults(typing.NamedTuple):
    """Default trade-off weights of a regulariser, and where they come from."""

    alpha: float
    beta: float
    source: str


NEW_WEIGHTS_TERM = "l2_new"
# What a regulariser may need beyond the network, computed by the app before its terms are built.
NEEDS = ("w0", "fisher", "attention")


class Regularizer:
    """A regulariser: its defaults, what it needs, and its main loss term (`beta/2 ||w_new||^2` is added to it).

    Attributes:
        name: the `--regularizer` value.
        defaults: `Defaults` (alpha, beta, where they come from).
        needs: subset of `NEEDS`: "w0" (the starting point), "fisher" (diagonal Fisher at w0, by
            variable key), "attention" (DELTA's channel attention and hooked layers).
        page: its method page in docs/methods/.
        flags: its own settings (`Flag`s with defaults), read from the config's `extra`.
    """

    name = ""
    defaults = Defaults(0.0, 0.0, "-")
    needs: tuple = ()
    page = ""
    flags: tuple = ()
    files: dict = {}  # files it writes in the run directory beyond the regularisation glue

    def term_options(self, settings):
        """Keyword arguments of `main_term` taken from the resolved `settings` (its flags)."""
        return {}

    def main_term(self, network, shared, alpha, starts=None, fisher=None, attention=None, hooks=None, delta_reduction="mean"):
        """The penalty on the shared weights: a `TrainingTerm` named after the regulariser, or None."""
        return None


class NoRegularizer(Regularizer):
    name = "none"


class L2(Regularizer):
    name = "l2"
    defaults = Defaults(1e-4, 1e-3, "authors' code (L2-SP paper): 1e-4 on the pretrained layers, 1e-3 on the new ones")
    page = "l2_sp.md"

    def main_term(self, network, shared, alpha, **needs):
        return __getattr__("WeightDecayPenalty")(list(shared.values()), alpha, name=self.name)


class _StartingPointRegularizer(Regularizer):
    """An SP penalty: `term_class(variables, alpha, starts=...)`, with the Fisher when it needs it."""

    term_class = ""  # a name in _TERM_MODULES

    def main_term(self, network, shared, alpha, starts=None, fisher=None, **needs):
        start_values = None if starts is None else [starts.get(key) for key in shared]  # None: the variable's value now
        kwargs = {}
        if "fisher" in self.needs:
            missing = [key for key in shared if fisher is None or key not in fisher]
            if missing:
                raise ModelConfigError(f"--regularizer {self.name} needs the Fisher information of {len(missing)} weights (first: {missing[0]})")
            kwargs[self.fisher_argument] = [fisher[key] for key in shared]
        return __getattr__(self.term_class)(list(shared.values()), alpha, starts=start_values, name=self.name, **kwargs)


class L2SP(_StartingPointRegularizer):
    name = "l2sp"
    defaults = Defaults(0.1, 0.01, "authors' code (L2-SP)")
    needs = ("w0",)
    page = "l2_sp.md"
    term_class = "L2SPPenalty"


FISHER_FLAGS = (
    Flag(
        "fisher_head",
        str,
        "log-likelihood of the Fisher: the source classifier when the backbone has one (auto, default), or the new classifier (target)",
        choices=("auto", "source", "target"),
        default="auto",
    ),
    Flag("fisher_scale", str, "mean (default): F divided by its mean so alpha keeps L2-SP's meaning; raw: F as estimated", choices=("mean", "raw"), default="mean"),
)


class L2SPFisher(L2SP):
    name = "l2sp_fisher"
    defaults = Defaults(0.1, 0.01, "as L2-SP, with F normalised to mean 1 (our choice)")
    needs = ("w0", "fisher")
    fisher_argument = "coefficients"
    flags = FISHER_FLAGS


class L1SP(_StartingPointRegularizer):
    name = "l1sp"
    defaults = Defaults(1e-4, 0.01, "our choice: the pull alpha equals L2-SP's at |w - w0| = 1e-3; no published value")
    needs = ("w0",)
    page = "l1_sp.md"
    term_class = "L1SPPenalty"


class GroupLassoSP(_StartingPointRegularizer):
    name = "gl_sp"
    defaults = Defaults(1e-4, 0.01, "our choice: same strength as L1-SP for uniform displacements; no published value")
    needs = ("w0",)
    page = "gl_sp.md"
    term_class = "GroupLassoSPPenalty"


class GroupLassoSPFisher(GroupLassoSP):
    name = "gl_sp_fisher"
    defaults = Defaults(1e-4, 0.01, "as GL-SP, with F normalised to mean 1 (our choice)")
    needs = ("w0", "fisher")
    fisher_argument = "fisher"
    flags = FISHER_FLAGS


class Delta(Regularizer):
    name = "delta"
    defaults = Defaults(0.01, 0.01, "authors' code (DELTA)")
    needs = ("attention",)
    page = "delta.md"
    attention_file = "delta_attention.npz"
    files = {attention_file: "channel attention and the loss rises behind it", attention_file + ".json": "how it was estimated"}
    flags = (
        Flag("delta_head_epochs", int, "DELTA: epochs of the new head trained on the frozen network before scoring channels (default 10)", minimum=0, default=10),
        Flag("delta_attention_batches", int, "DELTA: batches averaged when scoring channels (default 4)", minimum=1, default=4),
        Flag("delta_reduction", str, "DELTA: mean (default) or sum (the authors' code) of the feature term over the batch", choices=REDUCTIONS, default="mean"),
    )

    def term_options(self, settings):
        return {"delta_reduction": settings["delta_reduction"]}

    def attention_options(self, settings):
        """Keyword arguments of `estimate_channel_attention` from the resolved settings."""
        return {"head_epochs": int(settings["delta_head_epochs"]), "score_batches_count": int(settings["delta_attention_batches"])}

    def main_term(self, network, shared, alpha, attention=None, hooks=None, delta_reduction="mean", **needs):
        if attention is None or hooks is None:
            raise ModelConfigError("--regularizer delta needs the channel attention and hooked layers (computed by app.regularization)")
        return __getattr__("DeltaPenalty")(network, hooks, attention, alpha, reduction=delta_reduction, name=self.name)


REGISTRY = {r.name: r for r in (NoRegularizer(), L2(), L2SP(), L2SPFisher(), L1SP(), GroupLassoSP(), GroupLassoSPFisher(), Delta())}
DEFAULTS = {name: r.defaults for name, r in REGISTRY.items()}
REGULARIZERS = tuple(REGISTRY)


def regularizer_flags():
    """Every registered regulariser's flags, each once, in registry order."""
    flags = {}
    for regularizer in REGISTRY.values():
        for flag in regularizer.flags:
            flags.setdefault(flag.name, flag)
    return list(flags.values())


def get_regularizer(name):
    """The registered `Regularizer` called `name`, or a one-line ModelConfigError listing the valid names."""
    check_regularizer(name)
    return REGISTRY[name]


def check_regularizer(name, alpha=None, beta=None, penalize=None):
    """Raise ModelConfigError (one line) for an unknown name or a negative / non-finite weight."""
    if name not in REGISTRY:
        raise ModelConfigError(f"unknown regularizer {name!r}; choose one of: {', '.join(REGULARIZERS)}")
    for flag, value in (("alpha", alpha), ("beta", beta)):
        if value is None:
            continue
        if not (float(value) >= 0 and float(value) < float("inf")):
            raise ModelConfigError(f"--{flag} must be a number >= 0, got {value}; pass e.g. --{flag} {getattr(DEFAULTS['l2sp'], flag)}")
        if name == "none":
            raise ModelConfigError(f"--{flag} has no meaning with --regularizer none; drop it or choose a regularizer such as l2sp")
    if penalize is not None and penalize not in PENALIZE:
        raise ModelConfigError(f"unknown --penalize {penalize!r}; use one of {', '.join(PENALIZE)}")


def build_penalty_terms(
    name,
    network,
    alpha=None,
    beta=None,
    penalize="kernels",
    starts=None,
    fisher=None,
    attention=None,
    hooks=None,
    delta_reduction="mean",
    exclude_parts=(),
):
    """The `TrainingTerm`s of regulariser `name` for `network`.

    Call it on a freshly built network (it holds the pretrained weights): the SP terms snapshot
    w0 from it, DELTA copies its pretrained parts.

    Args:
        name: one of `REGULARIZERS`.
        network: an assembled classifier or SpotTune model.
        alpha, beta: trade-off weights (None: `DEFAULTS[name]`).
        penalize: "kernels" (conv and dense kernels only, the authors' choice) or "all" (every
            trainable weight, BatchNorm and biases included), for the shared and the new weights.
        starts: optional {variable key: array} of w0 (keys from `variables.variable_key`); a
            variable without an entry starts from its current value (the default for all).
        fisher: for the regularisers that need it, {variable key: array} of the diagonal Fisher (same keys).
        attention: for delta, list of `[C_j]` channel attention arrays, one per hook.
        hooks: for delta, the hooked layer names.
        delta_reduction: for delta, "mean" (default) or "sum" (the authors' code) over the batch.
        exclude_parts: top-level layers no term touches (the strategy's `own_parts`).

    Returns:
        a list of `TrainingTerm`s: the main term and `l2_new` (empty for "none").

    Raises:
        ModelConfigError: unknown name, bad weights, missing Fisher or attention.
    """
    check_regularizer(name, alpha, beta, penalize)
    regularizer = REGISTRY[name]
    alpha = regularizer.defaults.alpha if alpha is None else float(alpha)
    beta = regularizer.defaults.beta if beta is None else float(beta)
    from models.regularizers.variables import keyed_variables, new_variables, shared_variables

    shared = keyed_variables(shared_variables(network, penalize))
    main = regularizer.main_term(
        network, shared, alpha, starts=starts, fisher=fisher, attention=attention, hooks=hooks, delta_reduction=delta_reduction
    )
    if main is None:
        return []
    new = [v for _, v in new_variables(network, penalize, exclude=exclude_parts)]
    return [main, __getattr__("WeightDecayPenalty")(new, beta, name=NEW_WEIGHTS_TERM)]


__all__ = [
    "DEFAULTS",
    "NEEDS",
    "REGISTRY",
    "REGULARIZERS",
    "DeltaPenalty",
    "GroupLassoSPPenalty",
    "L1SPPenalty",
    "L2SPPenalty",
    "Regularizer",
    "WeightDecayPenalty",
    "build_penalty_terms",
    "check_regularizer",
    "get_regularizer",
    "regularizer_flags",
]
