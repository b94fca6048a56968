"""TransTailor's rounds (Liu et al., AAAI 2021, Algorithm 1), from the fine-tuned network W_f:

    repeat:
      (a) target-aware pruning: a FilterScale alpha per prunable filter (1 at the start), every other
          weight frozen; alpha trained on the target loss for `scale_epochs`; Taylor importance beta
          accumulated over the training split; the globally least important filters removed until
          `step` x (the unpruned network's MACs) are gone (never below the target);
      (b) importance-aware fine-tuning: each kept filter's output multiplied by its fixed beta
          (normalised per layer to mean 1, our reading), folded into the BatchNorm before it, then every
          weight trained for `tailor_epochs`;
    until MACs <= target_ratio x the unpruned MACs, or validation accuracy falls more than `max_drop`
    points below the previous round's (the network of the previous round is kept), or nothing is left
    to prune.
"""

import numpy as np

from models.strategies.freezing import set_trainable
from models.transtailor.filter_scale import FilterScale
from models.transtailor.flops import count_macs, macs_by_layer
from models.transtailor.importance import channel_costs, choose_removals, normalized_importance, taylor_importance
from models.transtailor.surgery import channel_groups, rebuild


def describe(model, image_size, base_macs, accuracy):
    macs = count_macs(model, image_size)
    return {
        "macs": int(macs),
        "flops_ratio": round(macs / base_macs, 6),
        "parameters": int(model.count_params()),
        "validation_accuracy": accuracy,
        "channels": {g.producer: g.channels for g in channel_groups(model)},
    }


IMPORTANCE_SCALES = ("beta", "none")


def with_fixed_importance(model, scores, keep, groups, importance_scale="beta"):
    """The pruned network, with the normalised importances folded into its BatchNorm ("beta") or without
    any scale ("none": plain pruning); a plain network either way."""
    scaled = rebuild(model, keep=keep)
    for name, factors in normalized_importance(scores, keep, groups).items():
        scaled.get_layer(name).alpha.assign(factors if importance_scale == "beta" else np.ones_like(factors))
    return rebuild(scaled, fold_scales=True)


def tailor(network, fit, evaluate, train_batches, image_size, bn, target_ratio, max_drop, step=0.1, scale_epochs=1,
           tailor_epochs=1, importance_scale="beta", log=print):
    """Runs the rounds; returns (the kept network, [one record per round, round 0 = the unpruned network]).

    Args:
        network: the fine-tuned flat classifier W_f.
        fit: `fit(model, epochs)`: trains `model` (its trainable flags as set) on the training split.
        evaluate: `evaluate(model)` -> validation accuracy in [0, 1].
        train_batches: `train_batches()` -> the training split, evaluation preprocessing, one pass.
        image_size: input side for the MACs count.
        bn: the run's `--bn` for the fine-tuning phases.
        target_ratio: stop once MACs <= target_ratio x the unpruned MACs.
        max_drop: points of validation accuracy a round may lose against the previous one.
        step: MACs removed per round, as a fraction of the unpruned MACs (paper: 10 %).
        importance_scale: "beta" (kept filters' outputs times their normalised importance during the
            fine-tuning, the paper's step 5) or "none" (plain pruning, then fine-tuning).
    """
    base_macs = count_macs(network, image_size)
    accuracy = evaluate(network)
    records = [{"round": 0, **describe(network, image_size, base_macs, accuracy), "filters_removed": 0, "kept": True}]
    log(f"transtailor round 0: {base_macs:,} MACs, validation accuracy {accuracy:.4f}")
    current, current_accuracy = network, accuracy
    round_index = 0
    while count_macs(current, image_size) > target_ratio * base_macs * (1 + 1e-9):
        round_index += 1
        groups = channel_groups(current)
        if not groups:
            records[-1]["stopped"] = "no prunable channels"
            break
        # (a) target-aware pruning
        scaled = rebuild(current, insert_scales=True)
        for layer in scaled.layers:
            set_trainable(layer, isinstance(layer, FilterScale))
        if scale_epochs > 0:
            fit(scaled, scale_epochs)
        scores = taylor_importance(scaled, train_batches())
        macs_now = count_macs(current, image_size)
        budget = min(step * base_macs, macs_now - target_ratio * base_macs)
        keep, removed_macs, removed = choose_removals(groups, scores, channel_costs(groups, macs_by_layer(current, image_size)), budget)
        if removed == 0:
            records[-1]["stopped"] = "every prunable layer is at its minimum width"
            break
        # (b) importance-aware fine-tuning
        pruned = with_fixed_importance(scaled, scores, keep, groups, importance_scale)
        before_tuning = evaluate(pruned)
        for layer in pruned.layers:
            set_trainable(layer, True, bn)
        if tailor_epochs > 0:
            fit(pruned, tailor_epochs)
        accuracy = evaluate(pruned)
        record = {"round": round_index, **describe(pruned, image_size, base_macs, accuracy), "filters_removed": int(removed),
                  "validation_accuracy_before_finetuning": before_tuning}
        drop = (current_accuracy - accuracy) * 100.0
        record["kept"] = bool(drop <= max_drop)
        records.append(record)
        log(f"transtailor round {round_index}: {record['macs']:,} MACs ({record['flops_ratio']:.3f}), "
            f"{record['parameters']:,} parameters, validation accuracy {accuracy:.4f} (after pruning, before fine-tuning: {before_tuning:.4f})" + ("" if record["kept"] else " (dropped: stop)"))
        if not record["kept"]:
            record["stopped"] = f"validation accuracy fell {drop:.2f} points (> {max_drop:g}): the previous round's network is kept"
            break
        current, current_accuracy = pruned, accuracy
    return current, records


def save_rounds_plot(records, path):
    """FLOPs ratio (x) against validation accuracy (y), one point per round, the kept network marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5), dpi=100)
    ratios = [r["flops_ratio"] for r in records]
    accuracy = [100 * r["validation_accuracy"] for r in records]
    axis.plot(ratios, accuracy, "o-", color="tab:blue")
    for r, x, y in zip(records, ratios, accuracy):
        axis.annotate(str(r["round"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if not r.get("kept", True):
            axis.plot([x], [y], "x", color="tab:red", markersize=9)
    axis.invert_xaxis()
    axis.set_xlabel("MACs / unpruned MACs")
    axis.set_ylabel("validation accuracy (%)")
    axis.set_title("TransTailor rounds", fontsize=9)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return np.asarray(ratios)
