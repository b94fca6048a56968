"""`alpha/2 * ||w||^2`: plain L2 (weight decay) as a loss term.

Method page: docs/methods/l2_sp.md.
"""

import keras
from keras import ops

from models.regularizers.references import Untracked, is_unbound, resolve_variables, variable_paths
from models.serialization import PACKAGE
from models.training_term import TrainingTerm


def squared_norm(weights):
    """Raw penalty `1/2 * sum_j w_j^2` over a list of tensors (a scalar; 0 for an empty list)."""
    total = ops.zeros((), "float32")
    for w in weights:
        total = total + 0.5 * ops.sum(ops.square(ops.cast(w, "float32")))
    return total


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightDecayPenalty(TrainingTerm):
    """`weight/2 * ||w||_2^2` over the given variables.

    Two uses: the L2 baseline of the SP paper (`alpha/2 ||w_S||^2` on the shared weights, authors'
    default 1e-4, and `beta/2 ||w_new||^2` on the new ones, 1e-3), and the `beta/2 ||w_new||^2`
    part of every SP penalty and of DELTA (authors' default beta 0.01). Unlike the optimiser's
    decoupled weight decay, this term is part of the loss, so it is logged as a metric.

    Args:
        variables: the network's variables (references, not owned), or their paths (from a config;
            resolved by `bind`).
        weight: the trade-off weight (alpha or beta).
        **kwargs: passed to `TrainingTerm` (`name` is the metric's name).

    Call arguments:
        outputs: the network's outputs for the batch (unused).
        training: unused.

    Example:
    >>> term = WeightDecayPenalty(new_weights, weight=0.01, name="l2_new")

    Reference:
    - [Li, Grandvalet, Davoine, Explicit Inductive Bias for Transfer Learning with Convolutional
      Networks (ICML 2018)](https://arxiv.org/abs/1802.01483), section 3.
    """

    def __init__(self, variables, weight, **kwargs):
        super().__init__(**kwargs)
        if float(weight) < 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        self.weight = float(weight)
        variables = list(variables)
        self._paths = list(variables) if is_unbound(variables) else variable_paths(variables)
        self._variables = Untracked(None if is_unbound(variables) else variables)
        self.built = True

    def bind(self, network):
        self._variables.value = resolve_variables(network, self._paths)

    def penalized_variables(self):
        return list(self._variables.value or [])

    def call(self, outputs, training=None):
        if self._variables.value is None:
            raise ValueError(f"term {self.name!r} was rebuilt from its config: bind it to the network first")
        return self.weight * squared_norm(self._variables.value)

    def get_config(self):
        config = super().get_config()
        config.update({"variables": list(self._paths), "weight": self.weight})
        return config
