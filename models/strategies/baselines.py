"""The baseline strategies: full fine-tuning, linear probe, and last-k.

- `finetune`: every layer trains, initialised from the pretrained weights.
- `linear`: only the new classifier trains; the backbone is frozen, BatchNorm in inference mode.
  (A linear probe on frozen features, the usual lower reference for transfer.)
- `last_k`: the last k blocks, the head and the classifier train; the stem and the first L - k
  blocks stay frozen (so does the normalisation layer, which has no weights). The baseline that SpotTune's global-k is compared with (Guo et al., CVPR
  2019, Sec. 4).
- `lp_ft`: LP-FT (Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform
  Out-of-Distribution", ICLR 2022): the new classifier trains alone first (a linear probe), then
  every layer, so fine-tuning starts from a trained head instead of a random one and its first
  gradients do not rewrite the pretrained features to fit noise. One `fit`: for `--head-epochs`
  epochs (default a third of `--epochs`) the pretrained layers' learning rate is 0, then they
  warm up and decay on their own schedule (`app.trainer.network_optimizer`). Any other strategy
  takes the same head phase with `--head-epochs N`.

Method page: docs/methods/baselines.md. Keras is imported when a network is built, not with the
declarations (the command line reads those before TensorFlow loads).
"""

from models.strategies.base import Strategy


class FineTune(Strategy):
    name = "finetune"
    description = "all layers train from the pretrained weights"

    def build(self, backbone, num_classes, normalization, options):
        from models.classifier import assemble_classifier
        from models.strategies.freezing import set_trainable

        model = assemble_classifier(backbone, num_classes, normalization=normalization, dropout=options.dropout)
        for layer in model.layers:
            set_trainable(layer, True, options.bn)
        return model


class LinearProbeThenFineTune(FineTune):
    name = "lp_ft"
    description = "LP-FT: the new classifier alone for --head-epochs (default a third of the epochs), then every layer"
    HEAD_SHARE = 3  # the head phase: epochs // 3

    def config_defaults(self, config):
        """The head phase, where not given: a third of the epochs, at least 1, leaving at least one to fine-tune."""
        return {"head_epochs": head_phase_epochs(config.epochs, self.HEAD_SHARE)}


def head_phase_epochs(epochs, share):
    """max(1, epochs // share), but fewer than `epochs` (0 when there is a single epoch)."""
    return min(max(1, int(epochs) // share), int(epochs) - 1)


class LinearProbe(Strategy):
    name = "linear"
    description = "only the new classifier trains (frozen backbone)"

    def build(self, backbone, num_classes, normalization, options):
        from models.backbones.base import CLASSIFIER_NAME
        from models.classifier import assemble_classifier
        from models.strategies.freezing import set_trainable

        model = assemble_classifier(backbone, num_classes, normalization=normalization, dropout=options.dropout)
        for layer in model.layers:
            set_trainable(layer, layer.name == CLASSIFIER_NAME, options.bn)
        return model


class LastK(Strategy):
    name = "last_k"
    description = "the last k blocks, the head and the classifier train"
    uses_k = True
    requires_k = True

    def build(self, backbone, num_classes, normalization, options):
        from models.backbones.base import CLASSIFIER_NAME, HEAD_NAME, block_name
        from models.classifier import assemble_classifier
        from models.strategies.freezing import set_trainable

        model = assemble_classifier(backbone, num_classes, normalization=normalization, dropout=options.dropout)
        num_blocks = len(backbone.blocks)
        trained = {block_name(i) for i in range(num_blocks - options.k, num_blocks)}
        trained |= {HEAD_NAME, CLASSIFIER_NAME}
        for layer in model.layers:
            set_trainable(layer, layer.name in trained, options.bn)
        return model
