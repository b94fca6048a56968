"""The `transtailor` strategy (Liu et al., "TransTailor: Pruning the Pre-trained Model for Improved Transfer
Learning", AAAI 2021): fine-tune (the run's `fit`: W_f), then rounds of target-aware pruning and
importance-aware fine-tuning (`models.transtailor.rounds`) down to `--target-ratio` of the MACs.

The result is a plain, smaller Keras network (ordinary layers, one flat graph): it saves, loads with
safe_mode and exports like any plain run. Method page: docs/methods/transtailor.md.
"""

from models.errors import ModelConfigError
from models.flags import Flag
from models.strategies.base import Strategy

DEFAULT_TARGET_RATIO = 0.5
DEFAULT_MAX_DROP = 0.3  # points (paper: delta = 0.3)
DEFAULT_STEP = 0.1  # of the unpruned MACs per round (paper)
DEFAULT_SCALE_EPOCHS = 1  # our reading: the paper trains alpha "until convergence"
DEFAULT_TAILOR_EPOCHS = 1  # the paper: 40 to 60; here one, raised with --tailor-epochs
# Our departure: the paper multiplies the kept filters by their importance while fine-tuning ("beta");
# measured on MobileNetV2 with BatchNorm frozen it collapses the network (docs/methods/transtailor.md).
DEFAULT_IMPORTANCE_SCALE = "none"
ROUNDS_FILE = "transtailor_rounds.png"
FINETUNED_FILE = "finetuned.keras"


class TransTailor(Strategy):
    name = "transtailor"
    description = "fine-tune, then prune filters by target-aware Taylor importance in rounds to --target-ratio of the FLOPs"
    family = "TransTailor"
    flags = (
        Flag("target_ratio", float, "transtailor: stop at this fraction of the unpruned MACs (default 0.5)", minimum=0, positive=True),
        Flag("max_drop", float, "transtailor: stop when validation accuracy falls more than this many points in a round (default 0.3, the paper's)", minimum=0),
        Flag("prune_step", float, "transtailor: MACs removed per round, fraction of the unpruned (default 0.1, the paper's)", minimum=0, positive=True),
        Flag("scale_epochs", int, "transtailor: epochs training the filter scales each round (default 1)", minimum=0),
        Flag("tailor_epochs", int, "transtailor: fine-tuning epochs after each pruning (default 1; the paper 40-60)", minimum=0),
        Flag(
            "importance_scale", str, "transtailor: fine-tune the kept filters times their normalised importance (beta, the paper) or plain (none, default: see the method page)",
            choices=("beta", "none"),
        ),
    )
    export_kind = "plain"
    files = {
        ROUNDS_FILE: "TransTailor: validation accuracy against the FLOPs ratio, one point per round",
        FINETUNED_FILE: "TransTailor: the unpruned fine-tuned network W_f (the baseline of bench.transtailor_curve)",
    }

    def check_flags(self, extra):
        super().check_flags(extra)
        ratio = extra.get("target_ratio")
        if ratio is not None and float(ratio) > 1:
            raise ModelConfigError(f"--target-ratio is a fraction of the unpruned FLOPs in (0, 1], got {ratio}")

    def build(self, backbone, num_classes, normalization, options):
        from models.strategies.freezing import set_trainable
        from models.transtailor.flat_network import build_flat_classifier

        model = build_flat_classifier(backbone, num_classes, normalization=normalization, dropout=options.dropout)
        for layer in model.layers:
            set_trainable(layer, True, options.bn)
        return model

    def after_fit(self, context):
        """The rounds, from the fine-tuned network; `context.network` becomes the kept pruned network."""
        from models.transtailor.rounds import tailor

        if context.fit is None:
            raise ModelConfigError("transtailor trains in rounds: it needs a trainer that offers RunContext.fit")
        extra = context.options.extra
        split = "validation" if context.validation_data is not None else "train"
        image_size = _image_size(context)
        context.network.save(context.path(FINETUNED_FILE))
        network, records = tailor(
            context.network,
            fit=context.fit,
            evaluate=lambda model: context.evaluate(model, [split])[split],
            train_batches=lambda: context.batches("train"),
            image_size=image_size,
            bn=context.options.bn,
            target_ratio=float(extra.get("target_ratio") or DEFAULT_TARGET_RATIO),
            max_drop=float(extra.get("max_drop", DEFAULT_MAX_DROP)),
            step=float(extra.get("prune_step") or DEFAULT_STEP),
            scale_epochs=int(extra.get("scale_epochs", DEFAULT_SCALE_EPOCHS)),
            tailor_epochs=int(extra.get("tailor_epochs", DEFAULT_TAILOR_EPOCHS)),
            importance_scale=extra.get("importance_scale") or DEFAULT_IMPORTANCE_SCALE,
        )
        context.network = network
        self._report = {"split": split, "image_size": image_size, "rounds": records}

    def finish(self, context):
        """The rounds (MACs, ratio, parameters, validation accuracy, channels per group) and their plot."""
        from models.transtailor.flops import count_macs
        from models.transtailor.rounds import save_rounds_plot

        report = dict(getattr(self, "_report", None) or {})
        records = report.get("rounds", [])
        if records:
            save_rounds_plot(records, context.path(ROUNDS_FILE))
            kept = [r for r in records if r.get("kept", True)][-1]
            report.update(
                {
                    "final_macs": count_macs(context.network, report["image_size"]),
                    "final_flops_ratio": kept["flops_ratio"],
                    "final_parameters": int(context.network.count_params()),
                    "unpruned_macs": records[0]["macs"],
                    "unpruned_parameters": records[0]["parameters"],
                    "flops": "multiply-accumulates of convolutions and dense layers, one image at the run's size",
                }
            )
        return {"transtailor": report}


def _image_size(context):
    for images, _ in context.batches("validation" if context.validation_data is not None else "train").take(1):
        return int(images.shape[1])
    raise ModelConfigError("transtailor: the training split is empty")
