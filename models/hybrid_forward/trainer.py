"""The trainer of Hybrid Forward: three target cross-entropies per batch, transfer and task balanced."""

import keras
from keras import ops

from models.hybrid_forward.hybrid_paths import STUDENT, TEACHER, HybridPaths, alternating, hybrid_logits
from models.regularizers.references import Untracked
from models.serialization import PACKAGE
from models.teacher.frozen_teacher import frozen_copy
from models.teacher.stages import stage_ends
from models.transfer_trainer import TransferTrainer, logits_of


def balance_weight(task, transfer):
    """`w = stop_gradient(task / transfer)`: the hybrid losses, so weighted, add exactly the task loss's value.

    So transfer and task "count equally" in the loss at every step (our reading of the paper's
    "set during training"), while each keeps its own gradient direction.
    """
    return ops.stop_gradient(task / ops.maximum(transfer, 1e-12))


def mean_cross_entropy(labels, logits):
    logits = ops.cast(logits, "float32")
    return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))


@keras.saving.register_keras_serializable(package=PACKAGE)
class HybridForwardTrainer(TransferTrainer):
    """`loss = L3 + w (L1 + L2)`, Hybrid Forward (Song et al., AAAI 2021; our reading, no public code).

    L3: the cross-entropy of the student alone (the compiled loss, plus any training term); L1 of
    the hybrid path S,T,S,... and L2 of T,S,T,... (`models.hybrid_forward.hybrid_paths`), both
    ending in the student's head; `w = stop_gradient(CE_student / (L1 + L2))` (`balance_weight`).
    The teacher is a frozen copy of the network taken when the trainer is built (before training:
    the pretrained weights), owned by the trainer (so it is in the resume checkpoint) and never
    updated; the run saves only the network, the student. Each term is a metric: `student_ce`,
    `hybrid_sts`, `hybrid_tst`, `hybrid_weight`.

    Args:
        network: the student, an assembled classifier.
        terms: training terms, as for `TransferTrainer`.
        **kwargs: passed to `TransferTrainer`.
    """

    def __init__(self, network, terms=(), **kwargs):
        super().__init__(network, terms, **kwargs)
        ends = stage_ends(network)
        self.teacher = frozen_copy(network, ends, name="hybrid_teacher")
        self._paths = Untracked(HybridPaths(network, self.teacher, ends))  # references to layers owned elsewhere
        self.owners = (alternating(len(ends), STUDENT), alternating(len(ends), TEACHER))
        self.hybrid_trackers = [keras.metrics.Mean(name=name) for name in ("student_ce", "hybrid_sts", "hybrid_tst", "hybrid_weight")]

    @property
    def paths(self):
        return self._paths.value

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        student = mean_cross_entropy(y, logits_of(y_pred))
        hybrid = [mean_cross_entropy(y, hybrid_logits(self.paths, x, owners, training=training)) for owners in self.owners]
        weight = balance_weight(student, hybrid[0] + hybrid[1])
        for tracker, value in zip(self.hybrid_trackers, [student, *hybrid, weight]):
            tracker.update_state(value)
        return loss + ops.cast(weight * (hybrid[0] + hybrid[1]), loss.dtype)

