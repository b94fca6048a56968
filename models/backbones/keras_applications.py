"""ResNet50, MobileNetV2 and MobileNet (V1) from `keras.applications`, cut into stem, blocks and head.

The application is built with `weights=None` and input `(None, None, 3)`, its weights are loaded
from a local file (or downloaded by Keras when the machine is online: see `imagenet_download`),
and its functional graph is replayed into sub-models that share its layers:
- "stem": the input up to the first block;
- "block_01" ...: one functional sub-model per block, from the block's input tensor to its output
  (ResNet50: conv2_block1 .. conv5_block3, 16 residual blocks; MobileNetV2: expanded_conv and
  block_1 .. block_16, 17 inverted-residual blocks; MobileNet: 13 depthwise-separable blocks,
  conv_dw_i + conv_pw_i);
- "head": the remaining layers (MobileNetV2: Conv_1, Conv_1_bn, out_relu) and global average
  pooling.

Registered names: `resnet50`; `mobilenet_v2` (alpha 1.0) and `mobilenet_v2_<alpha>` for the
other published widths (0.35, 0.5, 0.75, 1.3, 1.4); `mobilenet` (V1, alpha 1.0) and
`mobilenet_<alpha>` (0.25, 0.5, 0.75).

Default weights, looked for on the weights search path (`$ADAPTUNE_WEIGHTS_DIR`, assets/weights,
../shared/weights, the Keras cache ~/.keras/models): the ImageNet file with the classifier first
(the backbone then carries its 1000-class `source_classifier`), then the no-top file; for each, the
official Keras file name (any published input size) and the names of the files rebuilt from
Google's TFLite models (`mobilenet-imagenet/`), whose BatchNorm is folded into the kernels: they
fine-tune with the recipe below (README, "ImageNet backbones", has the measurements).
"""

import functools
import os

import keras

from models.backbones.base import HEAD_NAME, STEM_NAME, Backbone, block_name
from models.errors import ModelConfigError
from models.weights import find_weights_file, resolve_weights, weights_format, weights_search_path
from models.weights.search import WEIGHTS_DIR_ENV
from models.weights.imagenet import imagenet_class_names, imagenet_download
from models.weights.keras2_h5 import read_keras2_h5
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


def _mobilenet_v1_boundaries(model):
    return "conv1_relu", [f"conv_pw_{i}_relu" for i in range(1, 14)]


MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENET_V1_ALPHAS = (0.25, 0.5, 0.75, 1.0)
KERAS_INPUT_SIZES = (224, 192, 160, 128, 96)
# The Keras ImageNet classifier of each network: (layer, Dense or 1x1 conv) holding the top.
TOP_LAYERS = {"ResNet50": "predictions", "MobileNetV2": "predictions", "MobileNet": "conv_preds"}
# How these networks fine-tune from ImageNet, measured on clothing-small at 128 px (README, "ImageNet
# backbones"): BatchNorm in inference mode with the pretrained statistics (with batch statistics the
# moving averages lag behind and evaluation collapses to 0.25), and a peak learning rate of 0.001
# (0.01 collapses to 0.14, 0.003 is 3 points behind). Flags the user gives win.
IMAGENET_RECIPE = {"bn": "frozen", "lr": 0.001, "head_lr_ratio": 10.0}


def _alpha_text_v1(alpha):
    return {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]


def _keras_files(application, alpha, top):
    """Official keras.applications ImageNet file names, every published input size."""
    if application == "MobileNetV2":
        suffix = "" if top else "_no_top"
        return [f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}{suffix}.h5" for rows in KERAS_INPUT_SIZES]
    if application == "MobileNet":
        suffix = "" if top else "_no_top"
        return [f"mobilenet_{_alpha_text_v1(alpha)}_{rows}_tf{suffix}.h5" for rows in KERAS_INPUT_SIZES]
    return ["resnet50_weights_tf_dim_ordering_tf_kernels.h5" if top else "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"]


def _rebuilt_files(application, alpha, top):
    """Names of the files rebuilt from Google's TFLite MobileNets (../shared/weights/mobilenet-imagenet)."""
    suffix = "" if top else "_no_top"
    text = "1.0" if alpha == 1.0 else f"{alpha:g}"
    prefix = {"MobileNetV2": "mobilenet_v2", "MobileNet": "mobilenet"}.get(application)
    if prefix is None:
        return []
    return [f"mobilenet-imagenet/{prefix}_{text}_{rows}_imagenet{suffix}.h5" for rows in KERAS_INPUT_SIZES]


def download_file(name):
    """The official no-top 224 px ImageNet file of backbone `name`: what Keras downloads."""
    spec = SPECS[name]
    return _keras_files(spec["application"], spec["alpha"], False)[0]


def _spec(application, alpha=1.0):
    common = {"application": application, "alpha": alpha, "recipe": dict(IMAGENET_RECIPE)}
    if application == "ResNet50":
        return {
            **common,
            "boundaries": _resnet50_boundaries,
            "stages": [[0, 1, 2], [3, 4, 5, 6], [7, 8, 9, 10, 11, 12], [13, 14, 15]],
            "normalization": CAFFE_NORMALIZATION,
        }
    if application == "MobileNetV2":
        return {
            **common,
            "boundaries": _mobilenet_v2_boundaries,
            "stages": [[0], [1, 2], [3, 4, 5], [6, 7, 8, 9, 10, 11, 12], [13, 14, 15, 16]],
            "normalization": TF_NORMALIZATION,
        }
    return {
        **common,
        "boundaries": _mobilenet_v1_boundaries,
        "stages": [[0], [1, 2], [3, 4], [5, 6, 7, 8, 9, 10], [11, 12]],
        "normalization": TF_NORMALIZATION,
    }


def _alpha_name(prefix, alpha):
    return prefix if alpha == 1.0 else f"{prefix}_{alpha:g}"


SPECS = {"resnet50": _spec("ResNet50")}
SPECS.update({_alpha_name("mobilenet_v2", a): _spec("MobileNetV2", a) for a in MOBILENET_V2_ALPHAS})
SPECS.update({_alpha_name("mobilenet", a): _spec("MobileNet", a) for a in MOBILENET_V1_ALPHAS})


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


def default_files(name):
    """Default weight files of backbone `name`, in search order: with the ImageNet classifier, then without."""
    spec = SPECS[name]
    app, alpha = spec["application"], spec["alpha"]
    return [*_keras_files(app, alpha, True), *_rebuilt_files(app, alpha, True),
            *_keras_files(app, alpha, False), *_rebuilt_files(app, alpha, False)]


def _application(spec):
    build = getattr(keras.applications, spec["application"])
    kwargs = {"alpha": spec["alpha"]} if spec["application"] != "ResNet50" else {}
    return build(weights=None, include_top=False, input_shape=(None, None, 3), **kwargs)


def _load_keras2_file(model, path, name):
    """Assigns a Keras-2 layout .h5 file (with or without the ImageNet top) by layer name.

    Returns:
        the top's (kernel, bias) as Dense weights, or None when the file has no classifier.
    """
    arrays = read_keras2_h5(path)
    for layer in model.layers:
        for variable in layer.weights:
            key = f"{layer.name}/{variable.name}"
            if key not in arrays:
                raise ModelConfigError(
                    f"{path.name} does not match {name}: no array for {key}; pass the Keras ImageNet file of {name} "
                    f"({download_file(name)})"
                )
            if tuple(arrays[key].shape) != tuple(variable.shape):
                raise ModelConfigError(
                    f"{path.name} does not match {name}: {key} is {tuple(arrays[key].shape)} in the file, "
                    f"{tuple(variable.shape)} in {name} (another width, alpha?); pass the file of {name}"
                )
            variable.assign(arrays[key])
    top = TOP_LAYERS[SPECS[name]["application"]]
    if f"{top}/kernel" not in arrays:
        return None
    kernel, bias = arrays[f"{top}/kernel"], arrays[f"{top}/bias"]
    return kernel.reshape(-1, kernel.shape[-1]), bias


def _source_classifier(weights, feature_dim):
    from models.backbones.base import CLASSIFIER_NAME

    dense = keras.layers.Dense(int(weights[0].shape[-1]), name=CLASSIFIER_NAME)
    dense.build((None, feature_dim))
    dense.set_weights(list(weights))
    return dense


def build_keras_application(name, weights="default"):
    """A `keras.applications` backbone (a key of `SPECS`) as a `Backbone`.

    Args:
        name: "resnet50", "mobilenet_v2", "mobilenet_v2_0.35", "mobilenet", "mobilenet_0.75", ...
        weights: "default" (the ImageNet file on the weights search path, else Keras' download
            when online), "imagenet" (the same), "none" (random init), or a path: a Keras-2
            layout `.h5` (the official files, with or without the classifier) or a Keras weights
            file (.weights.h5/.keras) saved from an adaptune classifier on this backbone.

    Returns:
        a `Backbone` whose stem, blocks and head are functional sub-models; with an ImageNet
        file that holds the classifier, `source_classifier` is its 1000-class Dense (logits) and
        `source_class_names` the ImageNet class names.
    """
    spec = SPECS[name]
    files = default_files(name)
    if isinstance(weights, str) and weights.lower() in ("default", "imagenet"):
        # $ADAPTUNE_WEIGHTS_DIR first (the user's choice), then a file with the classifier anywhere on
        # the rest of the search path before a no-top one (the embedded main-job file has no top).
        folders = weights_search_path()
        chosen = folders[:1] if os.environ.get(WEIGHTS_DIR_ENV) else []
        path = find_weights_file(files, chosen) if chosen else None
        path = path or find_weights_file(files[: len(files) // 2], folders[len(chosen):])
        if path is None:
            download = functools.partial(imagenet_download, download_file(name), spec["application"], name)
            path = resolve_weights("default", name, files[len(files) // 2 :], fallback=download)
    else:
        path = resolve_weights(weights, name, files)
    kind = weights_format(path, name, allowed=("keras2_h5", "keras")) if path is not None else None
    model = _application(spec)
    top = None
    if kind == "keras2_h5":
        top = _load_keras2_file(model, path, name)
    stem, blocks, head = split_functional(model, *spec["boundaries"](model))
    feature_dim = int(head.output.shape[-1])
    backbone = Backbone(
        name=name,
        stem=stem,
        blocks=blocks,
        head=head,
        feature_dim=feature_dim,
        stages=[list(s) for s in spec["stages"]],
        source_normalization=dict(spec["normalization"]),
        source_classifier=_source_classifier(top, feature_dim) if top is not None else None,
        source_class_names=imagenet_class_names(path) if top is not None else None,
        default_image_size=224,
        recipe=dict(spec["recipe"]),
    )
    if kind == "keras":
        load_keras_weights(backbone, path)
    if path is not None:
        backbone.weights_source = str(path)
    return backbone
