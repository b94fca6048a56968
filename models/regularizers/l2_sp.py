"""L2-SP and L2-SP-Fisher: a quadratic pull of the shared weights towards their starting point.

Method page: docs/methods/l2_sp.md.
"""

import keras
from keras import ops

from models.regularizers.starting_point import StartingPointTerm
from models.serialization import PACKAGE


def l2_sp(differences, coefficients=None):
    """Raw penalty `1/2 * sum_j F_j (w_j - w_j^0)^2` (F_j = 1 without coefficients).

    Args:
        differences: list of tensors `w - w0`.
        coefficients: optional list of tensors F, shaped like the differences.

    Returns:
        a float32 scalar.
    """
    total = ops.zeros((), "float32")
    for i, d in enumerate(differences):
        squared = ops.square(d)
        if coefficients is not None:
            squared = coefficients[i] * squared
        total = total + 0.5 * ops.sum(squared)
    return total


@keras.saving.register_keras_serializable(package=PACKAGE)
class L2SPPenalty(StartingPointTerm):
    """L2-SP: `alpha/2 * ||w_S - w_S^0||_2^2`; L2-SP-Fisher: `alpha/2 * sum_j F_j (w_j - w_j^0)^2`.

    w_S are the shared weights (those that existed in the source model), w_S^0 their pretrained
    values. The `beta/2 ||w_new||^2` part of the paper's regulariser is a separate term
    (`WeightDecayPenalty`), so both are logged. Authors' defaults: alpha 0.1, beta 0.01, only
    convolution and dense kernels.

    With `coefficients`, F is the diagonal Fisher information at w0
    (`models.regularizers.fisher.estimate_fisher`). The authors estimated F on the *source* data
    with the source task's loss; when only target data is at hand (this app), it is estimated on
    the target training images with the model's own predicted labels: a different quantity.

    Args:
        variables: the shared variables to penalise (references).
        alpha: trade-off weight.
        starts: optional list of w0 arrays (default: the variables' values now).
        coefficients: optional list of F arrays (L2-SP-Fisher).
        **kwargs: passed to `TrainingTerm`.

    Call arguments:
        outputs: unused.
        training: unused.

    Example:
    >>> term = L2SPPenalty([v for _, v in shared_variables(model, "kernels")], alpha=0.1, name="l2sp")

    Reference:
    - [Li, Grandvalet, Davoine, Explicit Inductive Bias for Transfer Learning with Convolutional
      Networks (ICML 2018)](https://arxiv.org/abs/1802.01483), section 3 (L2-SP, L2-SP-Fisher).
    """

    def raw_penalty(self, differences, coefficients):
        return l2_sp(differences, coefficients)
