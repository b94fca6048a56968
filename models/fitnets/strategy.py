"""`--strategy fitnets`: fine-tuning with the FitNets hint (Romero et al., ICLR 2015) as an extra loss.

`loss = CE + hint_weight * 0.5 * mean (T_l(x) - r(S_l(x)))^2`, T the frozen pretrained network
(the teacher), S the network being fine-tuned (the student, initialised from the same weights),
l the hinted stage, r a learned 1x1 convolution (`models.fitnets.hint_term`). The authors train
the guided layers on the hint first and then the whole student with knowledge distillation; as a
fine-tuning baseline (METHODS.md section 6) the hint is simply added to the cross-entropy.
Only the student is saved and exported: teacher and regressor live in the training term.
Method page: docs/methods/fitnets.md.
"""

from models.flags import Flag
from models.strategies.base import Strategy

DEFAULT_HINT_WEIGHT = 1.0
FITNETS_FLAGS = (
    Flag("hint_weight", float, "fitnets: weight of the hint loss (default 1)", minimum=0),
    Flag("hint_stage", int, "fitnets: hinted feature, 0 the stem, k stage k (default: the middle stage, as the authors)", minimum=0),
)


def middle_stage(num_stages):
    """The authors hint the middle layer of the network: stage ceil(K / 2) of K."""
    return max(1, (num_stages + 1) // 2)


class FitNets(Strategy):
    name = "fitnets"
    description = "fine-tuning plus the FitNets hint to the frozen pretrained network at one stage"
    family = "FitNets"
    flags = FITNETS_FLAGS

    def build(self, backbone, num_classes, normalization, options):
        from models.strategies.baselines import FineTune

        return FineTune().build(backbone, num_classes, normalization, options)

    def new_parts(self, options):
        """The classifier and the hint's regressor start from random weights: both train at the head's rate."""
        return super().new_parts(options) + ("regressor/",)

    def training_terms(self, network, options):
        from models.fitnets.hint_term import HintTerm
        from models.teacher.stages import stage_ends

        stage = options.extra.get("hint_stage")
        num_stages = len(stage_ends(network))
        if stage is None:
            stage = middle_stage(num_stages)
        if int(stage) > num_stages:
            from models.errors import ModelConfigError

            raise ModelConfigError(f"--hint-stage {stage} is out of range: this backbone has stages 1..{num_stages} (0: the stem)")
        term = HintTerm(stage=int(stage), weight=float(options.extra.get("hint_weight", DEFAULT_HINT_WEIGHT)), name="hint")
        term.bind(network)
        return [term]
