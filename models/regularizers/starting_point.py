"""The base of the SP penalties: references to the network's weights, and their starting point w0."""

import keras
import numpy as np
from keras import ops

from models.regularizers.references import Untracked, is_unbound, resolve_variables, variable_paths
from models.serialization import PACKAGE
from models.training_term import TrainingTerm


@keras.saving.register_keras_serializable(package=PACKAGE)
class StartingPointTerm(TrainingTerm):
    """A penalty on the distance between weights w and their starting point w0, times `alpha`.

    The term refers to the network's variables (it does not own them) and owns a snapshot w0 of
    each one, taken when it is constructed (at the start of training a freshly built network holds
    the pretrained weights) or given as `starts`. w0, and the optional per-weight `coefficients`
    (e.g. the diagonal Fisher information), are non-trainable weights of the term: the trainer's
    resume checkpoint saves them, so a resumed run keeps the same w0. Subclasses implement
    `raw_penalty(differences, coefficients)`, the penalty without its trade-off weight alpha
    (Transfer-Learning-Library style: the weight lives in the config).

    Args:
        variables: the network's variables to penalise (e.g. from
            `models.regularizers.variables.shared_variables`), or their paths (from a config: the
            state is created by `bind(network)`, its values come from the saved weights).
        alpha: the trade-off weight multiplying the raw penalty.
        starts: optional list of arrays, w0 for each variable (default: the variables' current values).
        coefficients: optional list of non-negative arrays shaped like the variables (Fisher weights).
        uses_coefficients: whether the term has coefficients (default: `coefficients is not None`);
            set in the config, so that a term rebuilt from it creates their slots.
        **kwargs: passed to `TrainingTerm` (`name` is the metric's name).

    Call arguments:
        outputs: the network's outputs for the batch (unused).
        training: unused; the penalty is the same in training and evaluation.
    """

    def __init__(self, variables, alpha, starts=None, coefficients=None, uses_coefficients=None, **kwargs):
        super().__init__(**kwargs)
        variables = list(variables)
        if float(alpha) < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha!r}")
        self.alpha = float(alpha)
        self.uses_coefficients = coefficients is not None if uses_coefficients is None else bool(uses_coefficients)
        if coefficients is not None and len(coefficients) != len(variables):
            raise ValueError(f"{len(coefficients)} coefficient arrays for {len(variables)} variables")
        self._paths = list(variables) if is_unbound(variables) else variable_paths(variables)
        self._variables = Untracked(None)
        self.starts, self.coefficients = [], None
        if not is_unbound(variables):
            self.create_state(variables, starts, coefficients)
        self.built = True

    def bind(self, network):
        """Refer to `network`'s variables (by the paths of the config) and create w0 (and coefficient) slots."""
        self.create_state(resolve_variables(network, self._paths), None, None)

    def create_state(self, variables, starts, coefficients):
        """Keep references to `variables` and create the term's own weights: w0, and the coefficients if any."""
        self._variables.value = list(variables)
        self.starts = [self._constant(v, starts[i] if starts is not None else None, f"w0_{i}") for i, v in enumerate(variables)]
        if self.uses_coefficients:
            values = coefficients if coefficients is not None else [np.zeros(tuple(v.shape), "float32") for v in variables]
            self.coefficients = [self._constant(v, c, f"coefficient_{i}") for i, (v, c) in enumerate(zip(variables, values))]

    def _constant(self, variable, value, name):
        weight = self.add_weight(shape=tuple(variable.shape), initializer="zeros", trainable=False, name=name, dtype=variable.dtype)
        value = keras.ops.convert_to_numpy(variable.value) if value is None else np.asarray(value)
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{name}: shape {tuple(value.shape)} does not match variable {variable.path} {tuple(variable.shape)}")
        weight.assign(value.astype(weight.dtype))
        return weight

    def penalized_variables(self):
        """The network variables this term penalises (references, not owned)."""
        return list(self._variables.value or [])

    def call(self, outputs, training=None):
        variables = self._variables.value
        if variables is None:
            raise ValueError(f"term {self.name!r} was rebuilt from its config: bind it to the network first")
        if not variables:
            return ops.zeros((), "float32")
        differences = [ops.cast(v, "float32") - ops.cast(w0, "float32") for v, w0 in zip(variables, self.starts)]
        coefficients = None if self.coefficients is None else [ops.cast(c, "float32") for c in self.coefficients]
        return self.alpha * self.raw_penalty(differences, coefficients)

    def raw_penalty(self, differences, coefficients):
        raise NotImplementedError

    def get_config(self):
        # w0 and the coefficients are the term's weights, saved with them, not in the config.
        config = super().get_config()
        config.update({"variables": list(self._paths), "alpha": self.alpha, "uses_coefficients": self.uses_coefficients})
        return config
