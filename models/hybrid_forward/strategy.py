"""`--strategy hybrid_forward`: Hybrid Forward (Song et al., AAAI 2021), our reading.

Teacher = a frozen copy of the pretrained network, student = the network being fine-tuned (every
layer, from the same weights), one target head (the student's). Per batch, three target
cross-entropies: the student alone, and two hybrid paths whose stages alternate between student
and teacher (S,T,S,... and T,S,T,...), weighted so that transfer and task count equally
(`models.hybrid_forward.trainer`). Only the student is saved and exported.
Method page: docs/methods/hybrid_forward.md.
"""

from models.strategies.base import Strategy


class HybridForward(Strategy):
    name = "hybrid_forward"
    description = "student plus two hybrid student/teacher paths through one head (our reading of Song et al.)"
    family = "Hybrid Forward"

    @property
    def trainer_class(self):
        from models.hybrid_forward.trainer import HybridForwardTrainer

        return HybridForwardTrainer

    def build(self, backbone, num_classes, normalization, options):
        from models.strategies.baselines import FineTune

        return FineTune().build(backbone, num_classes, normalization, options)
