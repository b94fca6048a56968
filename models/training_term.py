"""The interface of an extra loss term: a regulariser penalty or a strategy's auxiliary loss."""

import keras

from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class TrainingTerm(keras.layers.Layer):
    """A scalar added to the task loss while training, reported as a metric under its name.

    Subclasses implement `call(outputs, training=None)`, where `outputs` is what the network
    returned for the batch (a logits tensor, or a dict with "logits" and strategy-specific
    entries such as routing decisions), and return the term's value already multiplied by its
    weight. A term that needs the network's variables (an SP penalty) keeps references to them
    without owning them, and owns only its own state (for instance the starting point w0, as
    non-trainable weights, so that it is saved with the training checkpoint and a resumed run
    keeps it).

    A term's config holds its constructor arguments; those that refer to the network (its
    variables, by path) are resolved by `bind(network)`, which `TransferTrainer.from_config` calls,
    so a trainer saved as `.keras` loads back with its terms (their state comes from the weights).

    Args:
        **kwargs: passed to `keras.layers.Layer` (the `name` is the metric's name).
    """

    def bind(self, network):
        """Resolve the references a term rebuilt from its config has to `network` (default: none)."""

    def call(self, outputs, training=None):
        raise NotImplementedError
