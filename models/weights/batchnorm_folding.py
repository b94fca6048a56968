"""Networks whose BatchNorm was folded into the convolutions, given back a trainable parametrisation.

A converter that folds BatchNorm (TFLite, most int8 tool chains) leaves each convolution carrying
the product of its kernel and the BatchNorm scale: `y = W' x + b` with `W' = gamma / sqrt(var + eps) * W`.
Rebuilt into a conv -> BatchNorm network, every BatchNorm then has `gamma = sqrt(moving_var + eps)`
(the layer is the identity plus a shift in inference mode) and the per-filter kernel scales span
orders of magnitude (measured on the MobileNetV2 file rebuilt from Google's quantised model:
depthwise filter norms from 0.12 to 145). The function is right, but gradient descent is not
invariant to that scale: an SGD step changes filter c by `lr * g_c`, so relative to its size a
filter of norm 0.1 moves a thousand times further than one of norm 100. Fine-tuning such a file
diverges within the first epoch (training loss 17 to 37) with any learning rate that still moves
the large filters.

`unfold_batchnorm_scale` moves each filter's scale back into its BatchNorm, using the statistics the
file already holds (no data needed). For the conv output `y` with stored mean m and variance v,
and `s = sqrt(v + eps)` per filter:

    W <- W / s,   moving_mean <- m / s,   moving_var <- v / s^2,   gamma <- s * sqrt(v / s^2 + eps)

In inference mode `gamma * (y/s - m/s) / sqrt(v/s^2 + eps) + beta = y - m + beta`: the same function
(to float32 rounding), while every filter's output now has unit variance on the data the
statistics came from, as in a network trained with BatchNorm. Official Keras ImageNet files are
not folded and are left untouched.
"""

import numpy as np

import keras

FOLDED_RTOL = 1e-5


def batchnorm_pairs(model):
    """(convolution, BatchNormalization) pairs of a functional model: each BN fed directly by a conv."""
    pairs = []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        producer = layer.input._keras_history.operation
        if isinstance(producer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)) and not producer.use_bias:
            pairs.append((producer, layer))
    return pairs


def is_folded(pairs):
    """True when every BatchNorm has gamma = sqrt(moving_var + eps) and holds real statistics.

    A freshly initialised layer (gamma 1, moving mean 0, moving variance 1) is not evidence of
    folding: at least one layer must carry statistics that differ from the initial ones.
    """
    if not pairs:
        return False
    trained = False
    for _, bn in pairs:
        gamma = keras.ops.convert_to_numpy(bn.gamma)
        mean = keras.ops.convert_to_numpy(bn.moving_mean)
        variance = keras.ops.convert_to_numpy(bn.moving_variance)
        if not np.allclose(gamma, np.sqrt(variance + bn.epsilon), rtol=FOLDED_RTOL, atol=0.0):
            return False
        trained = trained or not (np.all(mean == 0.0) and np.all(variance == 1.0))
    return trained


def unfold_batchnorm_scale(model):
    """Rescales every conv -> BN pair of `model` in place when its BatchNorm is folded (see module doc).

    Args:
        model: a functional model whose convolutions feed BatchNorm layers (MobileNet V1/V2,
            ResNet50 from keras.applications).

    Returns:
        the number of pairs rescaled: 0 when the weights are not folded (left as they are).
    """
    pairs = batchnorm_pairs(model)
    if not is_folded(pairs):
        return 0
    for conv, bn in pairs:
        mean = keras.ops.convert_to_numpy(bn.moving_mean).astype(np.float64)
        variance = keras.ops.convert_to_numpy(bn.moving_variance).astype(np.float64)
        beta = keras.ops.convert_to_numpy(bn.beta)
        scale = np.sqrt(variance + bn.epsilon)
        kernel = keras.ops.convert_to_numpy(conv.kernel).astype(np.float64)
        if isinstance(conv, keras.layers.DepthwiseConv2D):
            kernel = kernel / scale.reshape(1, 1, -1, conv.depth_multiplier)
        else:
            kernel = kernel / scale.reshape(1, 1, 1, -1)
        new_variance = variance / scale**2
        conv.kernel.assign(kernel.astype(np.float32))
        bn.set_weights([
            (scale * np.sqrt(new_variance + bn.epsilon)).astype(np.float32),
            beta,
            (mean / scale).astype(np.float32),
            new_variance.astype(np.float32),
        ])
    return len(pairs)
