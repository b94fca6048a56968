"""AdaFilter's gate network: one recurrent cell shared by every gated layer (our reading, after SkipNet's `RNNGate`).

For gated layer l with input x_l (the previous layer's output) and F_l output filters:

    e_l = Dense_l^in(GAP(x_l))                       per-layer projection to an embedding of size E
    (h_l, c_l) = LSTMCell(e_l, (h_{l-1}, c_{l-1}))    one cell for all layers; (h_0, c_0) = 0 for every image
    g_l = BinaryGate(Dense_l^out(h_l))                per-layer projection to F_l logits, hard 0/1 gate

The paper (Guo et al., AAAI 2020) says only that the gates come from a recurrent network shared across
layers, conditioned on the previous layer's output; the pooling, projections, LSTM and the zero state
per image are our reading of SkipNet (Wang et al. 2018, ucbdrive/skipnet `imagenet/models.py`).
"""

import keras
from keras import ops

from models.serialization import PACKAGE


@keras.saving.register_keras_serializable(package=PACKAGE)
class ZeroState(keras.layers.Layer):
    """Zeros `[batch, units]`: the recurrent state every image starts from.

    Args:
        units: state size.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: any tensor whose first axis is the batch.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)

    def call(self, inputs):
        return ops.zeros((ops.shape(inputs)[0], self.units), dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class RecurrentGateCell(keras.layers.Layer):
    """One LSTM step, `[e, h, c] -> [h', c']`, called once per gated layer (the same weights for all).

    Args:
        units: LSTM state size.
        **kwargs: passed to `keras.layers.Layer`.

    Call arguments:
        inputs: `[e, h, c]`, e `[batch, embedding]`, h and c `[batch, units]`.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.cell = keras.layers.LSTMCell(self.units, name="lstm_cell")

    def build(self, input_shape):
        self.cell.build(input_shape[0])

    def call(self, inputs, training=None):
        embedding, h, c = inputs
        _, (h, c) = self.cell(embedding, [h, c], training=training)
        return [h, c]

    def compute_output_shape(self, input_shape):
        return [(input_shape[0][0], self.units), (input_shape[0][0], self.units)]

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config
