"""The baseline strategies: full fine-tuning, linear probe, and last-k.

- `finetune`: every layer trains, initialised from the pretrained weights.
- `linear`: only the new classifier trains; the backbone is frozen, BatchNorm in inference mode.
  (A linear probe on frozen features, the usual lower reference for transfer.)
- `last_k`: the last k blocks, the head and the classifier train; the stem and the first L - k
  blocks stay frozen (so does the normalisation layer, which has no weights). The baseline that SpotTune's global-k is compared with (Guo et al., CVPR
  2019, Sec. 4).

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
