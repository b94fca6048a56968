"""SpotTune strategies (Guo et al., "SpotTune: Transfer Learning through Adaptive Fine-tuning",
CVPR 2019): every block has a frozen pretrained copy and a fine-tuned copy, and a policy picks
one per image and block, trained end to end through a Gumbel-softmax gate.

- `spottune`: the authors' per-image policy network.
- `spottune_global`: one learned logit pair per block, shared by all images.
- `global_k`: the global policy plus the two loss terms of the paper's Sec. 3.3,
  `l1 * (sum_l v_l - k)^2 + l2 * sum_l (-v_l log v_l)`, so that exactly k blocks end fine-tuned
  and the model can be cut down to one plain network (`models.compact`).

Strategy-specific settings live in `StrategyOptions.extra`: tau, tau_schedule, tau_min, tau_rate,
frozen_bn, inference, policy_image_size, count_weight, binarize_weight, seed.
"""

from models.spottune import build_spottune_classifier
from models.strategies.base import Strategy

# Default weights of the global-k terms: chosen by the sweep in bench/global_k_sweep.py
# (table in the README). The paper publishes none.
DEFAULT_COUNT_WEIGHT = 10.0
DEFAULT_BINARIZE_WEIGHT = 1.0
DEFAULT_TAU = 5.0  # authors' code, constant


class SpotTune(Strategy):
    name = "spottune"
    description = "per-image policy network routes each block to its frozen or fine-tuned copy"
    policy = "per_image"
    routed = True

    def global_k_settings(self, options):
        return None

    def build(self, backbone, num_classes, normalization, options):
        extra = options.extra
        return build_spottune_classifier(
            backbone,
            num_classes,
            normalization=normalization,
            policy=self.policy,
            temperature=float(extra.get("tau", DEFAULT_TAU)),
            inference=extra.get("inference", "deterministic"),
            frozen_bn=extra.get("frozen_bn", "frozen"),
            policy_image_size=extra.get("policy_image_size"),
            global_k=self.global_k_settings(options),
            dropout=options.dropout,
            seed=extra.get("seed"),
        )


class SpotTuneGlobal(SpotTune):
    name = "spottune_global"
    description = "one learned routing decision per block, shared by all images"
    policy = "global"


class GlobalK(SpotTuneGlobal):
    name = "global_k"
    description = "global policy with exactly k fine-tuned blocks; compacts to one plain network"
    uses_k = True
    requires_k = True

    def global_k_settings(self, options):
        extra = options.extra
        return {
            "target_k": int(options.k),
            "count_weight": float(extra.get("count_weight", DEFAULT_COUNT_WEIGHT)),
            "binarize_weight": float(extra.get("binarize_weight", DEFAULT_BINARIZE_WEIGHT)),
        }
