"""A callback that sets the temperature of every Gumbel-softmax gate of a model at each epoch.

Method page: docs/methods/spottune.md.
"""

import math

import keras

from models.spottune.gumbel_softmax import GumbelSoftmax
from models.spottune.names import SCHEDULES  # noqa: F401  (defined without Keras there)


def gumbel_gates(model):
    """The `GumbelSoftmax` layers of `model`, searched through nested models."""
    found = []
    for layer in getattr(model, "layers", []):
        if isinstance(layer, GumbelSoftmax):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(gumbel_gates(layer))
    return found


class TemperatureSchedule(keras.callbacks.Callback):
    """Sets the Gumbel-softmax temperature at the start of every epoch.

    - "constant" (the authors' choice, tau = 5 throughout): `tau_t = initial`.
    - "exponential" (Jang et al.): `tau_t = max(minimum, initial * exp(-rate * t))`, t the epoch.

    The value depends only on the epoch number, so a run resumed with `fit(initial_epoch=...)`
    continues the schedule where it stopped (the current value is also saved with the weights).
    The value is written to the logs as "temperature" at the end of each epoch.

    Args:
        initial: temperature at epoch 0.
        schedule: "constant" or "exponential".
        rate: decay per epoch of the exponential schedule (our default, 0.05: tau halves in about
            14 epochs).
        minimum: floor of the exponential schedule (Jang et al. anneal to 0.5).
        gates: the `GumbelSoftmax` layers to drive; None for every one found in the model.

    Example:
    >>> model.fit(data, epochs=10, callbacks=[TemperatureSchedule(5.0, "exponential", rate=0.1)])

    Reference:
    - [Jang et al., Categorical Reparameterization with Gumbel-Softmax](https://arxiv.org/abs/1611.01144)
    """

    def __init__(self, initial=5.0, schedule="constant", rate=0.05, minimum=0.5, gates=None):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not float(initial) > 0 or float(minimum) < 0 or float(rate) < 0:
            raise ValueError(f"need initial > 0, minimum >= 0, rate >= 0; got {initial}, {minimum}, {rate}")
        self.initial = float(initial)
        self.schedule = schedule
        self.rate = float(rate)
        self.minimum = float(minimum)
        self.gates = gates

    def value(self, epoch):
        """The temperature at `epoch` (0-based)."""
        if self.schedule == "constant":
            return self.initial
        return max(self.minimum, self.initial * math.exp(-self.rate * epoch))

    def _targets(self):
        gates = self.gates if self.gates is not None else gumbel_gates(self.model)
        if not gates:
            raise ValueError("TemperatureSchedule: the model has no GumbelSoftmax layer")
        return gates

    def on_epoch_begin(self, epoch, logs=None):
        tau = self.value(epoch)
        for gate in self._targets():
            gate.temperature.assign(tau)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["temperature"] = float(keras.ops.convert_to_numpy(self._targets()[0].temperature))
