"""The one trainer factory: a config, its data and its network -> a compiled trainer with the
strategy's optimizer(s), loss terms and callbacks.

`python -m app.train`, `python -m app.tune` and the benches that train all build their trainer
here, so they train the same thing: the strategy's `trainer_class` around the network, its
`training_terms` plus the regulariser's terms, the network's optimizer (SGD with momentum or Adam
on a warm-up + cosine schedule) handed to the strategy's `optimizer` hook (SpotTune gives its
policy network its own SGD there), cross-entropy on the logits, and the strategy's `callbacks`.
"""

import dataclasses
import math

import keras

from models.strategies import RunContext, get_strategy


@dataclasses.dataclass
class Training:
    """A compiled trainer and what it was built from.

    Attributes:
        trainer: the compiled `keras.Model` that `fit` runs (a `TransferTrainer`).
        network: the network inside it (what the run saves as model.keras).
        backbone: the `Backbone` the network was built from.
        strategy: the `Strategy`.
        options: its `StrategyOptions`.
        image_size: training image side in pixels.
        normalization_source: "source" or "dataset" (which statistics the network's first layer uses).
    """

    trainer: keras.Model
    network: keras.Model
    backbone: object
    strategy: object
    options: object
    image_size: int
    normalization_source: str

    def context(self, config, bundle, run_directory, validation_data=None, splits=None):
        """The `RunContext` the strategy's hooks see for this run."""
        from app.training import evaluate_run_model, evaluation_splits
        from rundir import layout as rd

        def batches(split, training=False):
            return bundle.batches(split, config.batch_size, training=training, image_size=self.image_size)

        def evaluate(model, chosen):
            return evaluate_run_model(model, bundle, self.image_size, config.batch_size, chosen)[0]

        def fit(network, epochs):
            """One more round of training of `network`: a fresh trainer and schedule over `epochs`."""
            round_config = dataclasses.replace(config, epochs=int(epochs))
            steps = steps_per_epoch(config, bundle)
            round_config = dataclasses.replace(round_config, head_epochs=0)  # a later round: the head is trained
            optimizer = network_optimizer(round_config, steps, self.strategy.new_parts(self.options))
            trainer = compile_trainer(self.strategy, network, self.options, [], optimizer)
            train_data = bundle.batches("train", config.batch_size, training=True, image_size=self.image_size, seed=config.seed)
            return trainer.fit(train_data, validation_data=validation_data, epochs=int(epochs), verbose=0, shuffle=False)

        return RunContext(
            network=self.network,
            options=self.options,
            batches=batches,
            class_names=list(bundle.class_names),
            path=lambda name: rd.declared_path(run_directory, name, rd.run_files(self.strategy)),
            evaluate=evaluate,
            splits=list(splits if splits is not None else evaluation_splits(bundle)),
            validation_data=validation_data,
            fit=fit,
            trainer=self.trainer,
        )


def steps_per_epoch(config, bundle):
    return max(1, math.ceil(bundle.split_sizes["train"] / config.batch_size))


def network_optimizer(config, steps, new_parts=()):
    """The optimizer of the network's weights: one group, or two with their own learning rates.

    Pretrained layers train at `config.lr`; the new layers (variables whose path starts with one of
    `new_parts`: the classifier, FitNets' regressors, ...) at `config.lr * config.head_lr_ratio`.
    TLlib trains every method so (backbone 0.1x the head's rate); LP-FT (Kumar et al., ICLR 2022)
    trains the head alone first, here `config.head_epochs` epochs in which the pretrained group's
    rate is held at 0 (`models.schedules.DelayedStart`), then everything. Each group is SGD with
    momentum (or Adam) on a linear-warmup + cosine schedule: the head's over the whole run, the
    pretrained group's over the epochs after the head phase. With a ratio of 1 and no head phase
    this is the single optimizer of earlier runs (their checkpoints resume unchanged).
    """
    ratio, head_epochs = float(config.head_lr_ratio), int(config.head_epochs)
    pretrained = single_optimizer(config, steps, config.lr, delay_epochs=head_epochs)
    if not new_parts or (ratio == 1.0 and head_epochs == 0):
        return pretrained
    from models.split_optimizer import SplitOptimizer

    head = single_optimizer(config, steps, config.lr * ratio)
    return SplitOptimizer(pretrained, head, list(new_parts), name="parameter_groups")


def single_optimizer(config, steps, peak_lr, delay_epochs=0):
    """SGD with momentum (or Adam) peaking at `peak_lr`, held at 0 for `delay_epochs`, then a linear
    warm-up + cosine schedule over the remaining `config.epochs - delay_epochs` epochs of `steps` steps."""
    from models.schedules import DelayedStart

    epochs = max(config.epochs - delay_epochs, 1)
    total_steps = max(1, steps * epochs)
    warmup_steps = min(config.warmup_epochs, max(epochs - 1, 0)) * steps
    if config.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=peak_lr if warmup_steps == 0 else 0.0,
            decay_steps=max(1, total_steps - warmup_steps),
            warmup_target=peak_lr if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    else:
        rate = peak_lr
    if delay_epochs:
        rate = DelayedStart(rate, delay_steps=delay_epochs * steps)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=rate)
    return keras.optimizers.SGD(learning_rate=rate, momentum=config.momentum)


def compile_trainer(strategy, network, options, terms, optimizer):
    """The strategy's trainer around `network` with `terms`, compiled with `optimizer` passed through
    the strategy's `optimizer` hook, cross-entropy on the logits and accuracy.

    Everything that assembles a trainer goes through here (`build_trainer`, the benches).
    """
    trainer = strategy.trainer_class(network, terms=list(terms), name="trainer")
    trainer.compile(
        optimizer=strategy.optimizer(network, optimizer, options),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return trainer


def build_trainer(config, bundle, run_directory, cache_directory=None, verbose=True):
    """Builds the network of `config` for `bundle` and compiles its trainer (call it inside the distribution scope).

    Writes the regulariser's files (w0.npz, Fisher / attention caches, regularization.json) to
    `run_directory` (caches to `cache_directory` when given) and fills `config.alpha`, `beta` and
    `penalize` with the values used.

    Returns:
        a `Training`.
    """
    from app.regularization import regularization_terms
    from app.training import build_model, strategy_options

    strategy = get_strategy(config.strategy)
    options = strategy_options(config)
    network, backbone, image_size, normalization_source = build_model(config, bundle)
    terms = list(strategy.training_terms(network, options))
    terms += regularization_terms(config, network, backbone, bundle, run_directory, image_size, cache_directory, verbose)
    optimizer = network_optimizer(config, steps_per_epoch(config, bundle), strategy.new_parts(options))
    trainer = compile_trainer(strategy, network, options, terms, optimizer)
    return Training(trainer, network, backbone, strategy, options, image_size, normalization_source)
