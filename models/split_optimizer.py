"""One Keras optimizer that hands two groups of variables to two inner optimizers."""

import keras

from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class SplitOptimizer(keras.optimizers.Optimizer):
    """Updates variables whose path starts with one of `secondary_prefixes` with `secondary`,
    every other variable with `main`.

    Keras `fit` drives a single optimizer; SpotTune trains its policy network with its own
    optimiser and learning rate (authors' code: SGD lr 0.1 for the network, SGD lr 0.01 with
    weight decay 1e-3 for the policy). Both inner optimizers keep their own state (momentum
    slots, iteration counters, schedules) and are saved with the model's training checkpoint.
    `learning_rate` reports the main optimizer's.

    Args:
        main: optimizer for the network's variables.
        secondary: optimizer for the variables under `secondary_prefixes`.
        secondary_prefixes: variable path prefixes, e.g. ["policy/"].
        **kwargs: passed to `keras.optimizers.Optimizer` (name).

    Example:
    >>> opt = SplitOptimizer(keras.optimizers.SGD(0.1, momentum=0.9),
    ...                      keras.optimizers.SGD(0.01, momentum=0.9, weight_decay=1e-3), ["policy/"])
    """

    def __init__(self, main, secondary, secondary_prefixes, name="split_optimizer", **kwargs):
        kwargs.pop("learning_rate", None)
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self.main = main
        self.secondary = secondary
        self.secondary_prefixes = tuple(secondary_prefixes)

    def is_secondary(self, variable):
        return variable.path.startswith(self.secondary_prefixes)

    def build(self, variables):
        super().build(variables)
        self.main.build([v for v in variables if not self.is_secondary(v)])
        self.secondary.build([v for v in variables if self.is_secondary(v)])

    def apply(self, grads, trainable_variables=None):
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        grads, trainable_variables = list(grads), list(trainable_variables)
        if not self.built:
            self.build(trainable_variables)
        groups = {True: ([], []), False: ([], [])}
        for grad, variable in zip(grads, trainable_variables):
            bucket = groups[self.is_secondary(variable)]
            bucket[0].append(grad)
            bucket[1].append(variable)
        if groups[False][1]:
            self.main.apply(*groups[False])
        if groups[True][1]:
            self.secondary.apply(*groups[True])
        self.iterations.assign_add(1)

    @property
    def learning_rate(self):
        return self.main.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        # The base class sets a learning rate in its constructor; the inner optimizers own theirs.
        pass

    def _get_current_learning_rate(self):
        return self.main._get_current_learning_rate()

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "main": keras.optimizers.serialize(self.main),
                "secondary": keras.optimizers.serialize(self.secondary),
                "secondary_prefixes": list(self.secondary_prefixes),
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        main = keras.optimizers.deserialize(config.pop("main"), custom_objects=custom_objects)
        secondary = keras.optimizers.deserialize(config.pop("secondary"), custom_objects=custom_objects)
        prefixes = config.pop("secondary_prefixes")
        return cls(main, secondary, prefixes, name=config.get("name", "split_optimizer"))
