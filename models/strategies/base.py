"""The strategy interface: everything one fine-tuning method does, from flags to the exported network.

A strategy turns a backbone into a trainable classifier and owns the rest of its method's
lifecycle, through hooks whose defaults do nothing:

    config_defaults         training settings it needs where the user gave none (lp_ft: its head phase)
    flags / check_flags     its own command-line settings (kept in `StrategyOptions.extra`) and their checks
    check                   whether the options fit a backbone
    build                   backbone -> classifier, trainable flags set
    training_terms          extra loss terms added to the cross-entropy
    new_parts               path prefixes of the new (randomly initialised) variables: they train at the
                            head's rate (`--head-lr-ratio` x `--lr`) and alone in a head phase (`--head-epochs`)
    optimizer               parameter groups with their own optimizers (default: the network's optimizer)
    own_parts               top-level layers it trains and regularises itself (no regulariser term touches them)
    trainer_class           the `keras.Model` that runs `fit` (a subclass of `TransferTrainer` for a custom `train_step`)
    callbacks               Keras callbacks for `fit`
    before_fit / after_fit  phases before and after `fit` (a head pre-training, a pruning round, ...);
                            `context.fit` runs further rounds of training, and `after_fit` may hand back a
                            new network in `context.network` (a pruned one): the run saves and reports that
    finish                  its metrics and files once the network is trained
    files                   the files it writes in the run directory ({name: description})
    export_kind             which network `export` takes: "plain", "compact" or "routed"
    export_note             one line the export report carries about the exported graph ("" for none)
    ships_task_delta        whether `export --delta` applies (the pretrained backbone plus k blocks)

The application calls the hooks and names no strategy: a new method is a new package with a
`Strategy` subclass and one line in `models/strategies/__init__.py` (worked example in the README).
Strategies know nothing of the run directory's layout: hooks receive a `RunContext` whose `path`
names files inside it.
"""

import dataclasses
import typing

from models.errors import ModelConfigError

BN_MODES = ("train", "frozen")
EXPORT_KINDS = ("plain", "compact", "routed")


@dataclasses.dataclass
class StrategyOptions:
    """Options shared by strategies; each strategy reads the ones it needs.

    Attributes:
        k: number of blocks to fine-tune (`last_k`, `global_k`).
        bn: BatchNorm in the layers that train: "train" (batch statistics, moving averages updated,
            gamma/beta learned: standard fine-tuning) or "frozen" (inference mode with the
            pretrained statistics, gamma/beta fixed: the keras-io transfer-learning advice for
            small datasets). BatchNorm in frozen layers is always in inference mode.
        dropout: dropout rate before the new classifier.
        extra: strategy-specific settings, keyed by `Flag.name` (for instance the SpotTune temperature).
    """

    k: int | None = None
    bn: str = "train"
    dropout: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunContext:
    """What a strategy's hooks see of a run: network, options, data and a place for files.

    Attributes:
        network: the network being trained.
        options: its `StrategyOptions`.
        batches: `batches(split, training=False)` -> finite dataset of (images, labels) at the run's image size.
        class_names: names of the target classes.
        path: `path(name)` -> a file path inside the run directory, for a name the strategy declares in `files`.
        evaluate: `evaluate(model, splits)` -> {split: accuracy} with evaluation preprocessing.
        splits: the labelled splits evaluated at the end, in train / validation / test order.
        validation_data: the validation batches of `fit`, or None.
        accuracy: {split: accuracy} of the trained network (filled before `finish`).
        fit: `fit(network, epochs)` -> Keras History: one more round of training of `network` (the same
            network or another, e.g. a pruned one) on the training split with validation, through the
            same trainer factory as the main fit (the strategy's trainer class and optimizer, a fresh
            optimizer and learning-rate schedule over `epochs`; no regulariser terms, no resume
            checkpoint). For strategies that train in rounds (TransTailor); None where unavailable.
        trainer: the model `fit` trains (the `trainer_class` around the network, with the training
            terms), for the strategies whose parts live there (a teacher, meta-networks).
    """

    network: object
    options: StrategyOptions
    batches: typing.Callable
    class_names: list
    path: typing.Callable
    evaluate: typing.Callable
    splits: list = dataclasses.field(default_factory=list)
    validation_data: object = None
    accuracy: dict = dataclasses.field(default_factory=dict)
    fit: typing.Callable | None = None
    trainer: object = None


class Strategy:
    """Base class: subclasses set `name`, `description`, and implement `build`; every other hook is optional."""

    name = ""
    description = ""
    family = ""  # the heading of its flags in --help (e.g. "SpotTune")
    uses_k = False
    requires_k = False
    flags: tuple = ()
    own_parts: tuple = ()
    export_kind = "plain"
    export_note = ""
    ships_task_delta = False
    files: dict = {}

    @property
    def trainer_class(self):
        """The `keras.Model` class that wraps the network for `fit` (override for a custom `train_step`)."""
        from models.transfer_trainer import TransferTrainer

        return TransferTrainer

    def config_defaults(self, config):
        """{TrainConfig field: value} this strategy needs where the user gave none (default: nothing).

        Applied after the backbone's recipe (`app.recipes.apply_recipes`), so they may read its
        values (`config.epochs`, `config.lr`); config.json records the result.
        """
        return {}

    def check_flags(self, extra):
        """Raise ModelConfigError (one line) for a bad value of one of this strategy's flags in `extra`."""
        for flag in self.flags:
            flag.check(extra.get(flag.name))

    def check(self, options, num_blocks):
        """Raise ModelConfigError (one line) when `options` do not fit a backbone of `num_blocks` blocks."""
        if options.bn not in BN_MODES:
            raise ModelConfigError(f"unknown BatchNorm mode {options.bn!r}; use one of {', '.join(BN_MODES)}")
        if not 0.0 <= options.dropout < 1.0:
            raise ModelConfigError(f"--dropout must be in [0, 1), got {options.dropout}")
        if options.k is not None and not self.uses_k:
            raise ModelConfigError(f"--k has no meaning for strategy {self.name!r}; drop it or use a strategy that takes k")
        if self.requires_k:
            if options.k is None:
                raise ModelConfigError(f"strategy {self.name!r} needs --k N (1 <= N <= {num_blocks})")
            if not 1 <= options.k <= num_blocks:
                raise ModelConfigError(
                    f"--k {options.k} is out of range: this backbone has {num_blocks} blocks; use 1 <= k <= {num_blocks}"
                )
        self.check_flags(options.extra)

    def build(self, backbone, num_classes, normalization, options):
        """Return a keras.Model mapping images in [0, 255] to class logits, trainable flags set."""
        raise NotImplementedError

    def training_terms(self, network, options):
        """Extra loss terms (`models.training_term.TrainingTerm`) the strategy adds while training."""
        return []

    def new_parts(self, options):
        """Path prefixes of the variables that start from random weights (default: the new classifier's).

        They form the head group of the network's optimizer (`app.trainer.network_optimizer`): a
        learning rate of `--head-lr-ratio` times `--lr`, and the only weights that move during a head
        phase (`--head-epochs`). Parts that the strategy trains with an optimizer of its own (the
        `optimizer` hook: SpotTune's policy, AdaFilter's gates) are routed there before this split.
        """
        from models.backbones.base import CLASSIFIER_NAME

        return (CLASSIFIER_NAME + "/",)

    def optimizer(self, network, network_optimizer, options):
        """The optimizer `fit` uses, given the one configured for the network (default: that one).

        A strategy whose parts train with their own optimizer returns a `models.split_optimizer.SplitOptimizer`.
        """
        return network_optimizer

    def callbacks(self, context):
        """Keras callbacks for `fit` (a `RunContext` in)."""
        return []

    def before_fit(self, context):
        """A phase run after the trainer is compiled and before `fit`; returns nothing.

        It runs on a resumed run too, where `fit` then restores the weights of the last finished epoch.
        """

    def after_fit(self, context):
        """A phase run after `fit` and before the network is saved; returns nothing.

        It may replace `context.network` (for instance by a pruned network, trained further with
        `context.fit`): the run then saves, evaluates and exports the replacement.
        """

    def finish(self, context):
        """The strategy's metrics (a dict merged into metrics.json) and files, once the network is trained and evaluated."""
        return {}

    def trainable_summary(self, model):
        """Names of the top-level layers that have trainable weights, for the run's config."""
        return [layer.name for layer in model.layers if layer.trainable_weights]
