"""The `adafilter` strategy (Guo, Li, Wang, Rosing, "AdaFilter: Adaptive Filter Fine-tuning for Deep
Transfer Learning", AAAI 2020): every convolution inside the blocks has a frozen pretrained copy and a
fine-tuned copy, mixed per image and output filter by a hard gate from one shared recurrent gate network.

Loss: cross-entropy only (the paper reports no sparsity term). Optimisers (our reading; the paper names
none): SpotTune's, the network with the run's optimizer, the gate network with its own SGD (lr 0.01,
momentum 0.9). Evaluation and export: the same deterministic gates (g = [logit >= 0]), both paths of every
gated layer computed. Method page: docs/methods/adafilter.md.
"""

from models.flags import Flag
from models.strategies.base import Strategy

DEFAULT_GATE_LR = 0.01  # SpotTune's policy learning rate (authors' code), borrowed: AdaFilter gives none
DEFAULT_GATE_MOMENTUM = 0.9
USAGE_FILE = "filter_usage.png"
USAGE_LOGS = "logs/adafilter"
STATISTICS_SPLIT_ORDER = ("test", "validation", "train")


class AdaFilter(Strategy):
    name = "adafilter"
    description = "per-image, per-filter gates choose each block convolution's frozen or fine-tuned copy"
    family = "AdaFilter"
    flags = (
        Flag("gate_hidden", int, "adafilter: LSTM state size of the gate network (default 32, our reading)", minimum=1),
        Flag("gate_embedding", int, "adafilter: per-layer input projection size (default 16, our reading)", minimum=1),
        Flag("gate_lr", float, "adafilter: gate network learning rate (default 0.01, SpotTune's)", minimum=0),
    )
    export_kind = "plain"
    export_note = "AdaFilter: deterministic gates (g = [logit >= 0]); both paths of every gated convolution are computed"
    files = {USAGE_FILE: "gated layers x classes: fraction of filters and images using the fine-tuned filter"}

    def build(self, backbone, num_classes, normalization, options):
        from models.adafilter.classifier import DEFAULT_EMBEDDING, DEFAULT_HIDDEN, build_adafilter_classifier

        extra = options.extra
        return build_adafilter_classifier(
            backbone,
            num_classes,
            normalization=normalization,
            bn=options.bn,
            hidden=int(extra.get("gate_hidden") or DEFAULT_HIDDEN),
            embedding=int(extra.get("gate_embedding") or DEFAULT_EMBEDDING),
            dropout=options.dropout,
        )

    def optimizer(self, network, network_optimizer, options):
        """The run's optimizer for the network, SGD (lr `--gate-lr`, momentum 0.9) for the gate network."""
        import keras

        from models.adafilter.classifier import GATE_PREFIX
        from models.split_optimizer import SplitOptimizer

        gate = keras.optimizers.SGD(float(options.extra.get("gate_lr", DEFAULT_GATE_LR)), momentum=DEFAULT_GATE_MOMENTUM)
        return SplitOptimizer(network_optimizer, gate, [GATE_PREFIX])

    def callbacks(self, context):
        from models.adafilter.usage_monitor import FilterUsageMonitor

        data = context.validation_data or context.batches("train")
        return [FilterUsageMonitor(context.network, data, context.class_names, context.path(USAGE_LOGS))]

    def finish(self, context):
        """Filter usage per layer, filter and class on the test split (else validation, train), and its plot."""
        from models.adafilter.classifier import gated_layers
        from models.adafilter.filter_usage import filter_usage, save_usage_plot

        splits = context.splits
        split = next((s for s in STATISTICS_SPLIT_ORDER if s in splits), splits[0])
        statistics = filter_usage(context.network, context.batches(split), context.class_names)
        statistics["split"] = split
        statistics["gated_layers"] = len(gated_layers(context.network))
        statistics["inference"] = "deterministic"
        save_usage_plot(statistics, context.path(USAGE_FILE))
        return {"adafilter": statistics}
