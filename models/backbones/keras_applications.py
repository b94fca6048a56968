"""ResNet50 and MobileNetV2 from `keras.applications`, cut into stem, blocks and head.

The application is built with `weights=None` and input `(None, None, 3)`, its weights are loaded
from a local file (never downloaded: offline, Keras' download retries for minutes), and its
functional graph is replayed into sub-models that share its layers:
- "stem": the input up to the first block;
- "block_01" ...: one functional sub-model per residual block, from the block's input tensor to its
  output (ResNet50: conv2_block1 .. conv5_block3, 16 blocks; MobileNetV2: expanded_conv and
  block_1 .. block_16, 17 inverted-residual blocks);
- "head": the remaining layers (MobileNetV2: Conv_1, Conv_1_bn, out_relu) and global average
  pooling.

Default weights: the standard Keras no-top files, looked for on the weights search path (which
ends with the Keras cache, ~/.keras/models).
"""

import keras

from models.backbones.base import HEAD_NAME, STEM_NAME, Backbone, block_name
from models.errors import ModelConfigError
from models.weights import resolve_weights, weights_format
from models.weights.keras_file import load_keras_weights
from models.weights.state_dict import first_line

CAFFE_NORMALIZATION = {
    "mean": [103.939, 116.779, 123.68],
    "std": [1.0, 1.0, 1.0],
    "scale": 1.0,
    "channel_order": "bgr",
}
# MobileNetV2 expects x / 127.5 - 1, i.e. (x / 255 - 0.5) / 0.5.
TF_NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "scale": 1.0 / 255.0, "channel_order": "rgb"}


def _resnet50_boundaries(model):
    stages = [(2, 3), (3, 4), (4, 6), (5, 3)]
    return "pool1_pool", [f"conv{s}_block{b}_out" for s, n in stages for b in range(1, n + 1)]


def _mobilenet_v2_boundaries(model):
    names = {layer.name for layer in model.layers}
    ends = ["expanded_conv_project_BN"]
    for i in range(1, 17):
        ends.append(f"block_{i}_add" if f"block_{i}_add" in names else f"block_{i}_project_BN")
    return "Conv1_relu", ends


SPECS = {
    "resnet50": {
        "application": "ResNet50",
        "default_file": "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "boundaries": _resnet50_boundaries,
        "stages": [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 10, 11, 12], [13, 14, 15]],
        "normalization": CAFFE_NORMALIZATION,
    },
    "mobilenet_v2": {
        "application": "MobileNetV2",
        "default_file": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        "boundaries": _mobilenet_v2_boundaries,
        "stages": [[0], [1, 2], [3, 4, 5], [6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16]],
        "normalization": TF_NORMALIZATION,
    },
}


def extract_segment(model, start, end, name, extra_layers=()):
    """A functional sub-model replaying `model`'s layers from tensor `start` to tensor `end`.

    The sub-model shares the layers (and so the weights) of `model`. Layers are replayed in
    `model.layers` order (topological) whenever all their inputs are known, so a segment must not
    be crossed by a skip connection.

    Args:
        model: a functional model whose layers are each called once.
        start: the KerasTensor the segment starts from (becomes the sub-model's input).
        end: the KerasTensor it ends at.
        name: the sub-model's name.
        extra_layers: layers appended after `end` (e.g. global pooling).
    """
    inputs = keras.Input(shape=(None, None, start.shape[-1]))
    tensors = {id(start): inputs}
    x = inputs if start is end else None
    if x is None:
        for layer in model.layers:
            if isinstance(layer, keras.layers.InputLayer):
                continue
            flat = keras.tree.flatten(layer.input)
            if id(layer.output) in tensors or any(id(t) not in tensors for t in flat):
                continue
            out = layer(keras.tree.map_structure(lambda t: tensors[id(t)], layer.input))
            tensors[id(layer.output)] = out
            if layer.output is end:
                x = out
                break
    if x is None:
        raise ValueError(f"segment {name} of {model.name} does not reach its end tensor")
    for layer in extra_layers:
        x = layer(x)
    return keras.Model(inputs, x, name=name)


def split_functional(model, stem_end, block_ends):
    """Cuts a functional backbone into (stem, [blocks], head) sub-models by layer names."""
    outputs = [model.get_layer(n).output for n in [stem_end, *block_ends]]
    stem = extract_segment(model, model.input, outputs[0], STEM_NAME)
    blocks = [extract_segment(model, a, b, block_name(i)) for i, (a, b) in enumerate(zip(outputs, outputs[1:]))]
    head = extract_segment(
        model, outputs[-1], model.output, HEAD_NAME, [keras.layers.GlobalAveragePooling2D(name="avg_pool")]
    )
    return stem, blocks, head


def _load_legacy_h5(model, path, name):
    try:
        model.load_weights(str(path))
    except (ValueError, KeyError, OSError) as error:
        raise ModelConfigError(
            f"{path.name} does not match {name}: {first_line(error)}; pass the Keras {SPECS[name]['default_file']}"
        ) from None


def build_keras_application(name, weights="default"):
    """A `keras.applications` backbone ("resnet50" or "mobilenet_v2") as a `Backbone`.

    Args:
        name: "resnet50" or "mobilenet_v2".
        weights: "default" (the Keras no-top ImageNet file, e.g.
            resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5, on the weights search path;
            never downloaded), "none" (random init), or a path to that `.h5` file or to a Keras
            weights file (.weights.h5/.keras) saved from an adaptune classifier on this backbone.

    Returns:
        a `Backbone` whose stem, blocks and head are functional sub-models; no source classifier.
    """
    spec = SPECS[name]
    path = resolve_weights(weights, name, [spec["default_file"]])
    kind = weights_format(path, name, allowed=("keras2_h5", "keras")) if path is not None else None
    application = getattr(keras.applications, spec["application"])
    model = application(weights=None, include_top=False, input_shape=(None, None, 3))
    if kind == "keras2_h5":
        _load_legacy_h5(model, path, name)
    stem, blocks, head = split_functional(model, *spec["boundaries"](model))
    backbone = Backbone(
        name=name,
        stem=stem,
        blocks=blocks,
        head=head,
        feature_dim=int(head.output.shape[-1]),
        stages=[list(s) for s in spec["stages"]],
        source_normalization=dict(spec["normalization"]),
        source_classifier=None,
        source_class_names=None,
        default_image_size=224,
    )
    if kind == "keras":
        load_keras_weights(backbone, path)
    if path is not None:
        backbone.weights_source = str(path)
    return backbone


