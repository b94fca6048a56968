"""Group-Lasso-SP (and its Fisher variant): one group per output channel, pulled towards w0 as a whole.

Method page: docs/methods/gl_sp.md.
"""

import math

import keras
import numpy as np
from keras import ops

from models.regularizers.starting_point import StartingPointTerm
from models.serialization import PACKAGE

SMOOTHING = 1e-16


def group_sizes(shape):
    """n_g for a weight of `shape`: every axis but the last (output channels); 1 for a vector."""
    return int(np.prod(shape[:-1])) if len(shape) > 1 else 1


def group_lasso_sp(differences, group_weights, fisher=None, epsilon=SMOOTHING):
    """Raw penalty `sum_g a_g * sqrt(sum_{j in g} F_j d_j^2 + eps)`, one group per output channel (last axis).

    Without `fisher` (GL-SP) F_j = 1, so the group norm is `||w_g - w_g^0||_2`; with it
    (GL-SP-Fisher, the L2-SP authors' TF code, mode 7) each squared displacement is weighted by
    its Fisher information inside the group's square root. `sqrt(eps)` is subtracted per group so
    that the penalty is 0 at w = w0 (a constant: the gradient is the authors').

    Args:
        differences: list of tensors `w - w0`; groups are the slices along the last axis (a conv
            kernel `[kh, kw, in, out]` has `out` groups of `kh * kw * in` weights; a vector has one
            group per entry).
        group_weights: list of tensors `[out]`, a_g per group (`sqrt(n_g)`).
        fisher: optional list of tensors shaped like `differences`, F_j.
        epsilon: the smoothing constant (the authors': 1e-16).

    Returns:
        a float32 scalar.

    Reference:
    - [Li, Grandvalet, Davoine, Explicit Inductive Bias for Transfer Learning with Convolutional
      Networks (ICML 2018)](https://arxiv.org/abs/1802.01483), section 3; docs/methods/gl_sp.md.
    """
    total = ops.zeros((), "float32")
    offset = math.sqrt(epsilon)
    for index, (d, a) in enumerate(zip(differences, group_weights)):
        squared = ops.square(d)
        if fisher is not None:
            squared = ops.cast(fisher[index], "float32") * squared
        if len(d.shape) > 1:
            squared = ops.sum(ops.reshape(squared, (-1, d.shape[-1])), axis=0)
        total = total + ops.sum(a * (ops.sqrt(squared + epsilon) - offset))
    return total


def group_weights_of(shape):
    """a_g = sqrt(n_g) for a weight of `shape`, one per output channel."""
    out = shape[-1] if len(shape) else 1
    return np.full((out,), math.sqrt(group_sizes(shape)), np.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class GroupLassoSPPenalty(StartingPointTerm):
    """GL-SP: `alpha * sum_g sqrt(n_g) * ||w_g - w_g^0||_2`, one group g per output channel.

    n_g = kh * kw * in_channels for a convolution kernel, in_features for a dense kernel, 1 for a
    vector (BatchNorm parameters and biases, when `--penalize all`, so that they fall back to
    L1-SP). With `fisher` (GL-SP-Fisher, the authors' TF code):
    `alpha * sum_g sqrt(n_g) * sqrt(sum_{j in g} F_j (w_j - w_j^0)^2 + 1e-16)`, equal to GL-SP
    when F = 1. Default alpha 1e-4 (our choice, as for
    L1-SP: with equal displacements d per weight, `sqrt(n_g) ||d_g|| = n_g |d|`, so GL-SP and L1-SP
    have the same strength for the same alpha). beta/2 ||w_new||^2 is a separate term.

    Args:
        variables: the shared variables to penalise (references).
        alpha: trade-off weight.
        starts: optional list of w0 arrays.
        fisher: optional list of Fisher arrays shaped like the variables (GL-SP-Fisher).
        **kwargs: passed to `TrainingTerm`.

    Call arguments:
        outputs: unused.
        training: unused.

    Example:
    >>> term = GroupLassoSPPenalty(shared, alpha=1e-4, name="gl_sp")

    Reference:
    - [Li, Grandvalet, Davoine, Explicit Inductive Bias for Transfer Learning with Convolutional
      Networks (ICML 2018)](https://arxiv.org/abs/1802.01483), section 3 (Group-Lasso-SP).
    """

    def __init__(self, variables, alpha, starts=None, fisher=None, uses_fisher=None, **kwargs):
        kwargs.pop("coefficients", None)
        kwargs.pop("uses_coefficients", None)
        uses_fisher = fisher is not None if uses_fisher is None else bool(uses_fisher)
        super().__init__(variables, alpha, starts=starts, coefficients=fisher, uses_coefficients=uses_fisher, **kwargs)

    @property
    def uses_fisher(self):
        return self.uses_coefficients

    def create_state(self, variables, starts, coefficients):
        super().create_state(variables, starts, coefficients)
        group_weights = []
        for i, v in enumerate(variables):
            value = group_weights_of(tuple(v.shape))
            weight = self.add_weight(shape=value.shape, initializer="zeros", trainable=False, name=f"group_weight_{i}")
            weight.assign(value)
            group_weights.append(weight)
        self.group_weights = group_weights

    def raw_penalty(self, differences, coefficients):
        return group_lasso_sp(differences, [ops.cast(a, "float32") for a in self.group_weights], fisher=coefficients)

    def get_config(self):
        config = super().get_config()
        config["uses_fisher"] = config.pop("uses_coefficients")
        return config
