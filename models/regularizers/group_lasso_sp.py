"""Group-Lasso-SP (and its Fisher variant): one group per output channel, pulled towards w0 as a whole."""

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


def group_lasso_sp(differences, group_weights, epsilon=SMOOTHING):
    """Raw penalty `sum_g a_g * ||w_g - w_g^0||_2`, one group per output channel (last axis).

    `||.||_2` is smoothed as `sqrt(||d||^2 + eps) - sqrt(eps)` (0 at d = 0, differentiable there).

    Args:
        differences: list of tensors `w - w0`; groups are the slices along the last axis (a conv
            kernel `[kh, kw, in, out]` has `out` groups of `kh * kw * in` weights; a vector has one
            group per entry).
        group_weights: list of tensors `[out]`, a_g per group (`sqrt(n_g)` for GL-SP).
        epsilon: the smoothing constant.

    Returns:
        a float32 scalar.
    """
    total = ops.zeros((), "float32")
    offset = math.sqrt(epsilon)
    for d, a in zip(differences, group_weights):
        if len(d.shape) > 1:
            squared = ops.sum(ops.reshape(ops.square(d), (-1, d.shape[-1])), axis=0)
        else:
            squared = ops.square(d)
        total = total + ops.sum(a * (ops.sqrt(squared + epsilon) - offset))
    return total


def group_weights_of(shape, fisher=None):
    """a_g for a weight of `shape`: `sqrt(n_g)` (GL-SP), or `sqrt(sum_{j in g} F_j)` (GL-SP-Fisher).

    Our reading of GL-SP-Fisher: the group's Fisher mass replaces its size n_g, so a uniform F = 1
    gives back GL-SP exactly.
    """
    out = shape[-1] if len(shape) else 1
    if fisher is None:
        return np.full((out,), math.sqrt(group_sizes(shape)), np.float32)
    fisher = np.asarray(fisher, np.float64)
    mass = fisher.reshape(-1, out).sum(axis=0) if len(shape) > 1 else fisher
    return np.sqrt(np.maximum(mass, 0.0)).astype(np.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class GroupLassoSPPenalty(StartingPointTerm):
    """GL-SP: `alpha * sum_g sqrt(n_g) * ||w_g - w_g^0||_2`, one group g per output channel.

    n_g = kh * kw * in_channels for a convolution kernel, in_features for a dense kernel, 1 for a
    vector (BatchNorm parameters and biases, when `--penalize all`, so that they fall back to
    L1-SP). With `fisher` (GL-SP-Fisher) the group weight is `sqrt(sum_{j in g} F_j)` instead of
    `sqrt(n_g)` (our reading; equal to GL-SP when F = 1). Default alpha 1e-4 (our choice, as for
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

    def __init__(self, variables, alpha, starts=None, fisher=None, **kwargs):
        kwargs.pop("coefficients", None)
        variables = list(variables)
        weights = [group_weights_of(tuple(v.shape), None if fisher is None else fisher[i]) for i, v in enumerate(variables)]
        super().__init__(variables, alpha, starts=starts, **kwargs)
        self.group_weights = []
        for i, (v, w) in enumerate(zip(variables, weights)):
            weight = self.add_weight(shape=w.shape, initializer="zeros", trainable=False, name=f"group_weight_{i}")
            weight.assign(w)
            self.group_weights.append(weight)
        self.uses_fisher = fisher is not None

    def raw_penalty(self, differences, coefficients):
        return group_lasso_sp(differences, [ops.cast(a, "float32") for a in self.group_weights])

    def get_config(self):
        config = super().get_config()
        config.update({"uses_fisher": self.uses_fisher})
        return config
