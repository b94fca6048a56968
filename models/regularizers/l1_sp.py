"""L1-SP: an absolute-value pull of the shared weights towards their starting point.

Method page: docs/methods/l1_sp.md.
"""

import math

import keras
from keras import ops

from models.regularizers.starting_point import StartingPointTerm
from models.serialization import PACKAGE

SMOOTHING = 1e-16


def l1_sp(differences, epsilon=SMOOTHING):
    """Raw penalty `sum_j (sqrt((w_j - w_j^0)^2 + eps) - sqrt(eps))`, a smooth `sum_j |w_j - w_j^0|`.

    The authors smooth |d| as `sqrt(d^2 + 1e-16)`; subtracting the constant `sqrt(eps)` changes no
    gradient and makes the penalty exactly 0 at w = w0.

    Args:
        differences: list of tensors `w - w0`.
        epsilon: the smoothing constant.

    Returns:
        a float32 scalar.
    """
    total = ops.zeros((), "float32")
    offset = math.sqrt(epsilon)
    for d in differences:
        total = total + ops.sum(ops.sqrt(ops.square(d) + epsilon) - offset)
    return total


@keras.saving.register_keras_serializable(package=PACKAGE)
class L1SPPenalty(StartingPointTerm):
    """L1-SP: `alpha * sum_j |w_j - w_j^0|` over the shared weights (smoothed, see `l1_sp`).

    Default alpha 1e-4 (our choice; the paper selected it by cross-validation and published no
    value): the pull `alpha * sign(w - w0)` then equals L2-SP's `0.1 * (w - w0)` at a displacement
    of 1e-3, the size of a typical fine-tuning step. beta/2 ||w_new||^2 is a separate term.

    Args:
        variables: the shared variables to penalise (references).
        alpha: trade-off weight.
        starts: optional list of w0 arrays.
        **kwargs: passed to `TrainingTerm`.

    Call arguments:
        outputs: unused.
        training: unused.

    Example:
    >>> term = L1SPPenalty(shared, alpha=1e-4, name="l1sp")

    Reference:
    - [Li, Grandvalet, Davoine, Explicit Inductive Bias for Transfer Learning with Convolutional
      Networks (ICML 2018)](https://arxiv.org/abs/1802.01483), section 3 (L1-SP).
    """

    def __init__(self, variables, alpha, starts=None, **kwargs):
        kwargs.pop("coefficients", None)
        kwargs.pop("uses_coefficients", None)
        super().__init__(variables, alpha, starts=starts, **kwargs)

    def get_config(self):
        config = super().get_config()
        del config["uses_coefficients"]
        return config

    def raw_penalty(self, differences, coefficients):
        return l1_sp(differences)
