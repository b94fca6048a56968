"""`--strategy l2t_ww`: Learning What and Where to Transfer (Jang et al., ICML 2019; alinlab/L2T-ww).

The target network (`--backbone`, from `--weights`; the authors train it from scratch) is trained
on `CE + L_wfm`, the feature matching to a frozen source network (`--source-backbone NAME`
`--source-weights PATH`; default: a frozen copy of the target as built, same-network transfer),
weighted per channel ("what") and per pair of stages ("where") by meta-networks that learn through
the authors' bilevel step (`models.l2t_ww.trainer`). Only the target network is saved and exported.
Method page: docs/methods/l2t_ww.md.
"""

from models.flags import Flag
from models.strategies.base import Strategy

TERM_NAME = "l2t_ww"
DEFAULT_BETA = 0.5  # authors' code
DEFAULT_META_LR = 1e-4  # authors' code (they advise 1e-3 in their issue #4)
DEFAULT_META_WEIGHT_DECAY = 1e-4  # authors' code
DEFAULT_LOOKAHEAD_STEPS = 2  # authors' code, T
WHERE_FILE = "where_heatmap.png"
WHERE_LOGS = "logs/where"
WHERE_SPLIT_ORDER = ("validation", "test", "train")

L2T_FLAGS = (
    Flag("source_backbone", str, "l2t_ww: registered backbone of the frozen source network (default: the target backbone, same weights)"),
    Flag("source_weights", str, "l2t_ww: weights of the source network: 'default' or a file path (default: default)"),
    Flag("l2t_pairs", str, "l2t_ww: matched (source-target) stage pairs: all (default, the authors'), same, or M-N,M-N"),
    Flag("wfm_beta", float, "l2t_ww: weight beta of each pair's matching loss (default 0.5, the authors')", minimum=0),
    Flag("meta_lr", float, "l2t_ww: Adam learning rate of the what/where networks (default 1e-4, the authors')", minimum=0),
    Flag("meta_weight_decay", float, "l2t_ww: weight decay of the what/where networks (default 1e-4, the authors')", minimum=0),
    Flag("lookahead_steps", int, "l2t_ww: look-ahead steps T on the matching loss (default 2, the authors')", minimum=0),
)


class L2TWW(Strategy):
    name = "l2t_ww"
    description = "feature matching to a frozen source, weighted by meta-learned what/where networks (bilevel step)"
    family = "L2T-ww"
    flags = L2T_FLAGS
    files = {WHERE_FILE: 'source stages x target stages: mean learned "where" weight per pair'}

    @property
    def trainer_class(self):
        from models.l2t_ww.trainer import L2TWWTrainer

        return L2TWWTrainer

    def build(self, backbone, num_classes, normalization, options):
        from models.strategies.baselines import FineTune

        return FineTune().build(backbone, num_classes, normalization, options)

    def training_terms(self, network, options):
        from models.errors import ModelConfigError
        from models.l2t_ww.weighted_matching import WeightedFeatureMatching

        extra = options.extra
        term = WeightedFeatureMatching(
            pairs=extra.get("l2t_pairs", "all"),
            beta=float(extra.get("wfm_beta", DEFAULT_BETA)),
            lookahead_steps=int(extra.get("lookahead_steps", DEFAULT_LOOKAHEAD_STEPS)),
            source_backbone=extra.get("source_backbone"),
            source_weights=extra.get("source_weights", "default"),
            name=TERM_NAME,
        )
        try:
            term.bind(network)
        except ValueError as error:
            raise ModelConfigError(str(error).splitlines()[0]) from None
        return [term]

    def new_parts(self, options):
        """The classifier and the matching regressors start from random weights: both train at the head's rate."""
        from models.l2t_ww.weighted_matching import MATCH_PREFIX

        return super().new_parts(options) + (f"{TERM_NAME}/{MATCH_PREFIX}",)

    def optimizer(self, network, network_optimizer, options):
        """The network's SGD for the network and regressors, Adam for the what / where networks (authors' code)."""
        import keras

        from models.errors import ModelConfigError
        from models.l2t_ww.lookahead import sgd_groups
        from models.l2t_ww.weighted_matching import WHAT_PREFIX, WHERE_PREFIX
        from models.split_optimizer import SplitOptimizer

        if not all(isinstance(group, keras.optimizers.SGD) for group in sgd_groups(network_optimizer)):
            raise ModelConfigError("l2t_ww differentiates through SGD steps: use --optimizer sgd")
        extra = options.extra
        meta = keras.optimizers.Adam(
            learning_rate=float(extra.get("meta_lr", DEFAULT_META_LR)),
            weight_decay=float(extra.get("meta_weight_decay", DEFAULT_META_WEIGHT_DECAY)) or None,
        )
        return SplitOptimizer(network_optimizer, meta, [f"{TERM_NAME}/{WHAT_PREFIX}", f"{TERM_NAME}/{WHERE_PREFIX}"])

    def callbacks(self, context):
        """Per-epoch "where" weights to TensorBoard (`logs/where`) and the epoch logs."""
        from models.l2t_ww.where_weights import WhereMonitor

        data = context.validation_data or context.batches("train")
        return [WhereMonitor(context.trainer.matching, data, context.path(WHERE_LOGS))]

    def finish(self, context):
        """The learned "where" weights per pair (metrics.json "l2t_ww") and their heatmap (where_heatmap.png)."""
        from models.l2t_ww.where_weights import save_heatmap, where_table

        splits = context.splits
        split = next((s for s in WHERE_SPLIT_ORDER if s in splits), splits[0])
        table = where_table(context.trainer.matching, context.batches(split))
        table["split"] = split
        save_heatmap(table, context.path(WHERE_FILE))
        return {"l2t_ww": table}
