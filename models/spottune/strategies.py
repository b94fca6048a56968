"""SpotTune strategies (Guo et al., "SpotTune: Transfer Learning through Adaptive Fine-tuning",
CVPR 2019): every block has a frozen pretrained copy and a fine-tuned copy, and a policy picks
one per image and block, trained end to end through a Gumbel-softmax gate.

- `spottune`: the authors' per-image policy network (`--policy per_image`, default), or a light
  per-image policy on the stem's features (`--policy stem_features`, issue 14).
- `spottune_global`: one learned logit pair per block, shared by all images.
- `global_k`: the global policy plus the two loss terms of the paper's Sec. 3.3,
  `l1 * (sum_l v_l - k)^2 + l2 * sum_l (-v_l log v_l)`, so that exactly k blocks end fine-tuned
  and the model can be cut down to one plain network (`models.spottune.compact`). Or
  (`--block-choice top_k`) a straight-through Gumbel top-k gate that routes exactly k blocks on
  every step (`models.spottune.gumbel_softmax.TopKGumbelGate`). With `--compact-epochs N` the
  compact network itself (its k blocks, head and classifier) then trains N more epochs and is what
  the run saves, reports and exports (`GlobalK.after_fit`).

The whole method lives here: its flags, the policy's own optimizer (a `SplitOptimizer`), the
temperature schedule and routing monitor, the routing statistics, heatmap, sampled accuracy and
compact model written when training ends, and which network export takes.
Method page: docs/methods/spottune.md and docs/methods/global_k.md.
Keras is imported inside the hooks: the declarations (flags, files, export kind) are read by the
command line before TensorFlow loads.
"""

from models.flags import Flag
from models.errors import ModelConfigError
from models.spottune.names import (
    BLOCK_CHOICES,
    FROZEN_BN_MODES,
    GATE_NAME,
    GLOBAL_K_NAME,
    INFERENCE_MODES,
    PER_IMAGE_POLICIES,
    POLICY_NAME,
    SCHEDULES,
)
from models.strategies.base import Strategy

# Default weights of the global-k terms: chosen by the sweep in bench/global_k_sweep.py
# (table in the README). The paper publishes none.
DEFAULT_COUNT_WEIGHT = 10.0
DEFAULT_BINARIZE_WEIGHT = 1.0
DEFAULT_TAU = 5.0  # authors' code, constant
DEFAULT_POLICY_LR = 0.01  # authors' code
DEFAULT_POLICY_WEIGHT_DECAY = 1e-3  # authors' code
DEFAULT_POLICY_MOMENTUM = 0.9  # authors' code
ROUTING_FILE = "routing_heatmap.png"
COMPACT_FILE = "compact.keras"
ROUTED_FILE = "routed.keras"
ROUTING_LOGS = "logs/routing"
# The split the routing statistics describe: the first of these that the run evaluates.
STATISTICS_SPLIT_ORDER = ("test", "validation", "train")

SPOTTUNE_FLAGS = (
    Flag("tau", float, "Gumbel-softmax temperature (default 5, the authors')", minimum=0, positive=True),
    Flag("tau_schedule", str, "temperature schedule (default constant, the authors')", choices=SCHEDULES),
    Flag("tau_min", float, "floor of the exponential schedule (default 0.5)", minimum=0),
    Flag("tau_rate", float, "decay per epoch of the exponential schedule (default 0.05)", minimum=0),
    Flag(
        "frozen_bn",
        str,
        "BatchNorm of the frozen copies: frozen (default), train (authors' code: statistics update), train_affine",
        choices=FROZEN_BN_MODES,
    ),
    Flag(
        "inference", str, "routing at evaluation: the most likely copy (default) or sampled as in the authors' code", choices=INFERENCE_MODES
    ),
    Flag("policy_lr", float, "policy network learning rate (default 0.01, the authors')", minimum=0),
    Flag("policy_weight_decay", float, "policy network weight decay (default 1e-3, the authors')", minimum=0),
    Flag("policy_image_size", int, "input side of the per-image policy network (default: the training size)", minimum=8),
)
POLICY_FLAG = Flag(
    "policy",
    str,
    "spottune's per-image policy: per_image (default, the authors' network on the image) or "
    "stem_features (a light one on the stem's output)",
    choices=PER_IMAGE_POLICIES,
)
GLOBAL_K_FLAGS = (
    Flag("count_weight", float, "global_k: weight l1 of (sum_l v_l - k)^2 (default 10, from our sweep; 0 with --block-choice top_k)", minimum=0),
    Flag("binarize_weight", float, "global_k: weight l2 of sum_l -v_l log v_l (default 1, from our sweep; 0 with --block-choice top_k)", minimum=0),
    Flag(
        "block_choice",
        str,
        "global_k: how the k blocks are chosen: penalty (default, the paper's count and binarising terms on a "
        "per-block gate) or top_k (a straight-through Gumbel top-k gate: exactly k fine-tuned blocks per image and step)",
        choices=BLOCK_CHOICES,
    ),
    Flag(
        "compact_epochs",
        int,
        "global_k: once the k blocks are chosen, train the compact network (those k blocks, head and classifier; "
        "the other blocks stay pretrained) this many more epochs and ship it as model.keras (default 0: cut, not trained)",
        minimum=0,
    ),
)


def policy_optimizer(extra):
    """The policy network's own optimizer (authors' code: SGD, lr 0.01, momentum 0.9, weight decay 1e-3)."""
    import keras

    return keras.optimizers.SGD(
        learning_rate=float(extra.get("policy_lr", DEFAULT_POLICY_LR)),
        momentum=DEFAULT_POLICY_MOMENTUM,
        weight_decay=float(extra.get("policy_weight_decay", DEFAULT_POLICY_WEIGHT_DECAY)) or None,
    )


class SpotTune(Strategy):
    name = "spottune"
    description = "per-image policy network routes each block to its frozen or fine-tuned copy"
    family = "SpotTune"
    policy = "per_image"
    flags = SPOTTUNE_FLAGS + (POLICY_FLAG,)
    # The routing machinery did not exist in the source model and has its own weight decay in
    # its own optimizer: no regulariser term pulls or decays it (see models.regularizers.variables).
    own_parts = (POLICY_NAME, GATE_NAME, GLOBAL_K_NAME)
    export_kind = "routed"
    files = {ROUTING_FILE: "blocks x classes: fraction of images sent to the fine-tuned copy"}

    def global_k_settings(self, options):
        return None

    def top_k_setting(self, options):
        """k of a Gumbel top-k gate (global_k --block-choice top_k), else None."""
        return None

    def build(self, backbone, num_classes, normalization, options):
        from models.spottune.classifier import build_spottune_classifier

        extra = options.extra
        return build_spottune_classifier(
            backbone,
            num_classes,
            normalization=normalization,
            policy=self.policy_choice(extra),
            temperature=float(extra.get("tau", DEFAULT_TAU)),
            inference=extra.get("inference", "deterministic"),
            frozen_bn=extra.get("frozen_bn", "frozen"),
            bn=options.bn,
            policy_image_size=extra.get("policy_image_size"),
            global_k=self.global_k_settings(options),
            top_k=self.top_k_setting(options),
            dropout=options.dropout,
            seed=extra.get("seed"),
        )

    def check(self, options, num_blocks):
        super().check(options, num_blocks)
        extra = options.extra
        if extra.get("policy") == "stem_features" and extra.get("policy_image_size") is not None:
            raise ModelConfigError("--policy-image-size does not apply to --policy stem_features (it reads the stem's output); drop one")

    def policy_choice(self, extra):
        """The builder's `policy`: `--policy` (per_image by default) for spottune."""
        return extra.get("policy") or self.policy

    def optimizer(self, network, network_optimizer, options):
        """The network's optimizer for the network, the policy's own for the variables under "policy/"."""
        from models.split_optimizer import SplitOptimizer

        return SplitOptimizer(network_optimizer, policy_optimizer(options.extra), [POLICY_NAME + "/"])

    def callbacks(self, context):
        """The temperature schedule, and the per-epoch routing logs (`logs/routing`) on the validation data."""
        from models.spottune.routing_monitor import RoutingMonitor
        from models.spottune.temperature_schedule import TemperatureSchedule, gumbel_gates

        extra = context.options.extra
        schedule = TemperatureSchedule(
            initial=float(extra.get("tau", DEFAULT_TAU)),
            schedule=extra.get("tau_schedule", "constant"),
            rate=float(extra.get("tau_rate", 0.05)),
            minimum=float(extra.get("tau_min", 0.5)),
            gates=gumbel_gates(context.network),
        )
        data = context.validation_data or context.batches("train")
        return [schedule, RoutingMonitor(context.network, data, context.class_names, context.path(ROUTING_LOGS))]

    def finish(self, context):
        """Routing statistics and heatmap, the accuracy with sampled routing, and (global policies) the compact model."""
        from models.spottune.classifier import set_inference_mode
        from models.spottune.routing_statistics import routing_statistics, save_heatmap

        network = self.routed_network(context)
        splits = context.splits
        split = next((s for s in STATISTICS_SPLIT_ORDER if s in splits), splits[0])
        statistics = routing_statistics(network, context.batches(split), context.class_names)
        statistics["split"] = split
        save_heatmap(statistics, context.path(ROUTING_FILE))
        routing = {"inference": "deterministic", **statistics}
        set_inference_mode(network, "sample")
        routing["accuracy_sampled"] = {split: context.evaluate(network, [split])[split]}
        set_inference_mode(network, "deterministic")
        return {"routing": routing}

    def routed_network(self, context):
        """The routed network the routing report describes: the run's network (see `GlobalK`)."""
        return context.network


class SpotTuneGlobal(SpotTune):
    name = "spottune_global"
    description = "one learned routing decision per block, shared by all images"
    policy = "global"
    flags = SPOTTUNE_FLAGS
    files = {**SpotTune.files, COMPACT_FILE: "the compact plain network, one copy per block"}

    def check(self, options, num_blocks):
        super().check(options, num_blocks)
        if options.extra.get("policy") is not None:
            raise ModelConfigError(
                f"--policy only applies to strategy spottune; {self.name} learns one global policy (drop --policy)"
            )

    def policy_choice(self, extra):
        return self.policy

    def finish(self, context):
        """SpotTune's routing report, plus the policy's probabilities and the compact model (compact.keras)."""
        import keras

        from models.backbones.base import block_name
        from models.spottune.compact import chosen_blocks, compact_classifier

        metrics = super().finish(context)
        routing = metrics["routing"]
        network, k = self.routed_network(context), context.options.k
        logits = network.get_layer(POLICY_NAME).logits
        probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))[:, 1]
        phase = self.compact_phase(context)
        if phase is None:  # the compact network is cut from the routed one
            decisions, forced = chosen_blocks(network, k)
            compact = compact_classifier(network, decisions=decisions)
            compact_accuracy = context.evaluate(compact, context.splits)
        else:  # it was trained after the routed network (GlobalK.after_fit) and is the run's network
            decisions, forced, compact = phase["decisions"], phase["forced_top_k"], context.network
            compact_accuracy = dict(context.accuracy) or context.evaluate(compact, context.splits)
        compact.save(context.path(COMPACT_FILE))
        routing.update(
            {
                "policy_probabilities": [round(float(p), 6) for p in probabilities],
                "decisions": decisions,
                "finetuned_blocks": [i for i, d in enumerate(decisions) if d],
                "finetuned_block_names": [block_name(i) for i, d in enumerate(decisions) if d],
                "forced_top_k": bool(forced),
                "compact_file": COMPACT_FILE,
                "compact_accuracy": compact_accuracy,
                "compact_parameters": int(compact.count_params()),
            }
        )
        if phase is not None:
            network.save(context.path(ROUTED_FILE))
            routing.update(
                {
                    "routed_accuracy": phase["routed_accuracy"],
                    "routed_file": ROUTED_FILE,
                    "compact_cut_accuracy": phase["cut_accuracy"],
                    "compact_epochs": phase["epochs"],
                    "compact_trainable_layers": phase["trainable_layers"],
                    "compact_history": phase["history"],
                }
            )
        return metrics

    def compact_phase(self, context):
        """The record of a compact network trained after the routed one, when it is `context.network`; else None."""
        return None


class GlobalK(SpotTuneGlobal):
    """SpotTune global-k (Guo et al., CVPR 2019, Sec. 3.3): a global policy with exactly k fine-tuned blocks.

    How the k blocks are chosen (`--block-choice`):
    - "penalty" (default, the paper's formulation): a per-block Gumbel-softmax gate and
      `CE + l1 * (sum_l v_l - k)^2 + l2 * sum_l (-v_l log v_l)` (`GlobalKPenalty`); the k most likely
      blocks are forced at the end where the learned decisions do not number k.
    - "top_k" (ours, after the collapse of the penalty in docs/evidence-previous-recipe.md, "Why global-k loses here": the
      count term pulls every v_l down together to about k/L < 1/e, where the binarising term
      pushes them all to 0): a straight-through Gumbel top-k gate (`TopKGumbelGate`) routes exactly
      k blocks of every image on every step; the budget acts on the ranking of the blocks, not on
      the sum of their probabilities. l1 and l2 default to 0 there.

    Then (`--compact-epochs N`, `after_fit`) the compact network, the k chosen fine-tuned blocks in
    the pretrained backbone, trains N more epochs with only those blocks, the head and the
    classifier trainable (last-k-style freezing on the chosen blocks), and is the run's network:
    model.keras, metrics.json's `accuracy`, the export. The routed network's accuracy stays beside
    it (`routing.routed_accuracy`, and routed.keras).
    """

    name = "global_k"
    description = "global policy with exactly k fine-tuned blocks; compacts to one plain network"
    uses_k = True
    requires_k = True
    flags = SPOTTUNE_FLAGS + GLOBAL_K_FLAGS
    export_kind = "compact"
    ships_task_delta = True
    files = {**SpotTuneGlobal.files, ROUTED_FILE: "global_k with --compact-epochs: the routed network the k blocks were chosen from"}

    def global_k_settings(self, options):
        extra = options.extra
        top_k = self.block_choice(extra) == "top_k"
        return {
            "target_k": int(options.k),
            "count_weight": float(extra.get("count_weight", 0.0 if top_k else DEFAULT_COUNT_WEIGHT)),
            "binarize_weight": float(extra.get("binarize_weight", 0.0 if top_k else DEFAULT_BINARIZE_WEIGHT)),
        }

    def top_k_setting(self, options):
        return int(options.k) if self.block_choice(options.extra) == "top_k" else None

    @staticmethod
    def block_choice(extra):
        return extra.get("block_choice") or "penalty"

    def before_fit(self, context):
        self._compact = None  # no record of an earlier run in this process

    def after_fit(self, context):
        """With `--compact-epochs N`: choose the k blocks, train the compact network N epochs, hand it back."""
        from models.spottune.compact import chosen_blocks, compact_classifier, freeze_to_blocks

        self._compact = None
        epochs = int(context.options.extra.get("compact_epochs") or 0)
        if epochs <= 0:
            return
        if context.fit is None:
            raise ModelConfigError("global_k --compact-epochs trains the compact network: it needs a trainer that offers RunContext.fit")
        routed = context.network
        decisions, forced = chosen_blocks(routed, context.options.k)
        routed_accuracy = context.evaluate(routed, context.splits)
        compact = compact_classifier(routed, decisions=decisions)
        trainable_layers = freeze_to_blocks(compact, decisions, context.options.bn)
        cut_accuracy = context.evaluate(compact, context.splits)
        history = context.fit(compact, epochs)
        context.network = compact
        self._compact = {
            "network": compact,
            "routed": routed,
            "decisions": decisions,
            "forced_top_k": forced,
            "routed_accuracy": routed_accuracy,
            "cut_accuracy": cut_accuracy,
            "epochs": epochs,
            "trainable_layers": trainable_layers,
            "history": {key: [float(v) for v in values] for key, values in history.history.items()},
        }

    def compact_phase(self, context):
        phase = getattr(self, "_compact", None)
        return phase if phase is not None and phase["network"] is context.network else None

    def routed_network(self, context):
        phase = self.compact_phase(context)
        return phase["routed"] if phase is not None else context.network
