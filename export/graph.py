"""The serving graph every exported file is converted from.

    image  uint8 [batch, S, S, 3], RGB 0..255 (S = dataset.json image_size)
      -> cast to float32 inside the graph -> normalisation -> the rest of the model -> logits
    logits float32 [batch, num_classes]

The model's "normalization" layer (`ChannelNormalization`: scale, optional RGB -> BGR flip, mean,
std) is written as one 1x1 convolution with a bias, `y_c = sum_i x_i * scale / std_c * P[i, c] -
mean_c / std_c` (P the channel permutation): the same values (to float rounding), but a single op.
That matters for full-integer int8: TFLite quantises every intermediate tensor, and the three
elementwise ops of the layer each rounded the image once more (measured on a trained ResNet-20:
max |logit error| 1.31 -> 0.36, top-1 agreement 0.92 -> 0.95); a 1x1 convolution with per-channel
weights quantises its single weight per channel exactly and rounds once.

One signature, "serving_default", input "image", output "logits". The batch axis is dynamic; the
interpreters allocate batch 1 by default.

Routed (SpotTune) models have two graphs:

- "conditional" (default): the deterministic decision of each block, `policy_logits[..., 1] >
  policy_logits[..., 0]` (what the hard gate computes at deterministic inference: ties go to the
  pretrained copy), drives two `tf.cond` per block: the fine-tuned copy runs only if some image of
  the batch chose it, the pretrained copy only if some image did not; the untaken side is zeros and
  the two are mixed with the 0/1 decision, exactly as `RoutedBlock` does. For one image exactly one
  copy of each block runs. TFLite turns the conds into IF ops, ONNX into If nodes. The policy reads
  the normalised image, or the stem's output for the "stem_features" policy (computed once, shared
  with the blocks).
- "both": the Keras model as it is: both copies of every block run and are mixed. The fallback
  where a converter or interpreter cannot run the conditional graph.
"""

import os

import numpy as np
import tensorflow as tf

from export.compact import is_routed

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
SIGNATURE = "serving_default"
ROUTINGS = ("conditional", "both")


def input_signature(image_size):
    return [tf.TensorSpec([None, int(image_size), int(image_size), 3], tf.uint8, name=INPUT_NAME)]


def to_float(image):
    """uint8 RGB 0..255 -> float32 0..255: what the Keras models take."""
    return tf.cast(image, tf.float32)


def normalization_function(layer):
    """x float [0, 255] -> what `layer` (a ChannelNormalization) returns, as one 1x1 convolution plus bias."""
    mean = np.asarray(layer.mean, np.float32)
    std = np.asarray(layer.std, np.float32)
    order = [2, 1, 0] if layer.channel_order == "bgr" else [0, 1, 2]
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    for out_channel, in_channel in enumerate(order):
        kernel[0, 0, in_channel, out_channel] = float(layer.scale) / std[out_channel]
    bias = -mean / std

    def normalize(x):
        return tf.nn.conv2d(x, tf.constant(kernel), strides=1, padding="VALID") + tf.constant(bias)

    return normalize


def _split_at_normalization(model):
    """(normalize function, model from the normalised image to the logits), or (None, model)."""
    from models.backbones.base import NORMALIZATION_NAME
    from models.preprocessing import ChannelNormalization

    names = {layer.name: layer for layer in model.layers}
    layer = names.get(NORMALIZATION_NAME)
    if not isinstance(layer, ChannelNormalization) or len(layer.mean) != 3:
        return None, model
    import keras

    return normalization_function(layer), keras.Model(layer.output, model.outputs[0], name=f"{model.name}_after_normalization")


def plain_function(model):
    """image uint8 -> {"logits"} through `model` (plain classifier, or routed computing both copies)."""
    normalize, rest = _split_at_normalization(model)

    def serve(image):
        x = to_float(image)
        if normalize is not None:
            x = normalize(x)
        return {OUTPUT_NAME: rest(x, training=False)}

    return serve


def conditional_routed_function(model):
    """image uint8 -> {"logits"} of a routed model, each block computing only the copies its images chose.

    Args:
        model: a SpotTune model (from `models.spottune.classifier.build_spottune_classifier` or its `.keras` file).

    Returns:
        a Python function to trace with `input_signature(image_size)`. Its logits equal the model's at
        deterministic inference (dropout and the global-k penalty are identities there).
    """
    from models.backbones.base import CLASSIFIER_NAME, HEAD_NAME, NORMALIZATION_NAME, STEM_NAME
    from models.spottune.classifier import POLICY_NAME, reads_stem, routed_blocks

    normalize = normalization_function(model.get_layer(NORMALIZATION_NAME))
    policy = model.get_layer(POLICY_NAME)
    stem = model.get_layer(STEM_NAME)
    blocks = routed_blocks(model)
    head = model.get_layer(HEAD_NAME)
    classifier = model.get_layer(CLASSIFIER_NAME)

    def serve(image):
        x = normalize(to_float(image))
        h = stem(x, training=False)
        logits = policy(h if reads_stem(policy) else x, training=False)
        chosen = tf.greater(logits[..., 1], logits[..., 0])  # [batch, L], True = fine-tuned copy
        for index, block in enumerate(blocks):
            h = _conditional_block(block, h, chosen[:, index])
        return {OUTPUT_NAME: classifier(head(h, training=False))}

    return serve


def _conditional_block(block, h, use_finetuned):
    out_shape = block.finetuned.compute_output_shape(tuple(h.shape))
    if any(dim is None for dim in out_shape[1:]):
        raise ValueError(f"{block.name}: output shape {out_shape} is not static; export with routing 'both'")

    def zeros():
        return tf.zeros(tf.concat([tf.shape(h)[:1], list(out_shape[1:])], axis=0), h.dtype)

    def finetuned():
        return block.finetuned(h, training=False)

    def pretrained():
        return block.pretrained(h, training=False)

    y_finetuned = tf.cond(tf.reduce_any(use_finetuned), finetuned, zeros)
    y_pretrained = tf.cond(tf.reduce_all(use_finetuned), zeros, pretrained)
    gate = tf.reshape(tf.cast(use_finetuned, h.dtype), [-1] + [1] * (len(out_shape) - 1))
    return gate * y_finetuned + (1.0 - gate) * y_pretrained


def serving_function(model, routing="conditional"):
    """(function, has_control_flow) for `model`; plain models ignore `routing`."""
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {ROUTINGS}, got {routing!r}")
    if is_routed(model) and routing == "conditional":
        return conditional_routed_function(model), True
    return plain_function(model), False


def write_saved_model(model, function, directory, image_size):
    """Writes a TF SavedModel with the one signature "serving_default" (image uint8 -> logits)."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE, function, input_signature=input_signature(image_size))
    os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
    archive.write_out(directory, verbose=False)
    return directory
