"""The strategy interface: how to turn a backbone into a trainable classifier for one method.

A strategy decides which parts of the network train, how BatchNorm behaves, and which extra losses
or callbacks its training needs. A new method is a new module with a `Strategy` subclass and one
line in `models/strategies/__init__.py`.
"""

import dataclasses

from models.errors import ModelConfigError

BN_MODES = ("train", "frozen")


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
        extra: strategy-specific settings (for instance the SpotTune temperature).
    """

    k: int | None = None
    bn: str = "train"
    dropout: float = 0.0
    extra: dict = dataclasses.field(default_factory=dict)


class Strategy:
    """Base class: subclasses set `name`, `description`, and implement `build`."""

    name = ""
    description = ""
    uses_k = False
    requires_k = False
    routed = False  # SpotTune-style: a policy routes blocks between a frozen and a fine-tuned copy

    def check(self, options, num_blocks):
        """Raise ModelConfigError (one line) when `options` do not fit a backbone of `num_blocks` blocks."""
        if options.bn not in BN_MODES:
            raise ModelConfigError(f"unknown BatchNorm mode {options.bn!r}; use one of {', '.join(BN_MODES)}")
        if not 0.0 <= options.dropout < 1.0:
            raise ModelConfigError(f"--dropout must be in [0, 1), got {options.dropout}")
        if options.k is not None and not self.uses_k:
            raise ModelConfigError(f"--k has no meaning for strategy {self.name!r}; drop it or use last_k / global_k")
        if self.requires_k:
            if options.k is None:
                raise ModelConfigError(f"strategy {self.name!r} needs --k N (1 <= N <= {num_blocks})")
            if not 1 <= options.k <= num_blocks:
                raise ModelConfigError(
                    f"--k {options.k} is out of range: this backbone has {num_blocks} blocks; use 1 <= k <= {num_blocks}"
                )

    def build(self, backbone, num_classes, normalization, options):
        """Return a keras.Model mapping images in [0, 255] to class logits, trainable flags set."""
        raise NotImplementedError

    def training_terms(self, network, options):
        """Extra loss terms (`models.training_term.TrainingTerm`) the strategy adds while training."""
        return []

    def trainable_summary(self, model):
        """Names of the top-level layers that have trainable weights, for the run's config."""
        return [layer.name for layer in model.layers if layer.trainable_weights]
