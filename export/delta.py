"""The task delta of a global-k run: what a device that already has the pretrained backbone needs.

A global-k model is the pretrained backbone with k blocks replaced by fine-tuned copies, a trained
stem and head (where they have weights) and a new classifier. The delta file holds only

- the weights of every part that differs from the pretrained backbone: always the k fine-tuned
  blocks and the classifier, plus the stem / head / other blocks where training changed them
  (e.g. the trained SpotTune stem, or BatchNorm statistics), found by comparing with the backbone;
- what identifies the backbone: its registry name, the weights spec of the run (`default` or a
  path), and a SHA-256 fingerprint of every part taken from it, checked when rebuilding;
- what rebuilds the classifier around it: normalisation, dropout, number and names of classes,
  image size, the decisions.

File: a NumPy `.npz` (no pickles): arrays named "<part>/<index>" in `layer.get_weights()` order,
and "__meta__", a JSON string. `rebuild(path)` gives back the full Keras classifier:
`assemble_classifier(build_backbone(name, weights), ...)` with the delta's parts loaded; its
outputs are identical to the compact model the delta was made from.
"""

import hashlib
import json
import os

import numpy as np

from models.errors import ModelConfigError
from rundir.layout import replacing

FORMAT = "adaptune-task-delta"
VERSION = 1
META_KEY = "__meta__"
DELTA_FILE = "task_delta.npz"


def _parts(model_or_backbone):
    """Ordered {part name: layer} of the backbone parts (stem, block_01.., head)."""
    from models.backbones.base import HEAD_NAME, STEM_NAME, block_name

    if hasattr(model_or_backbone, "blocks") and hasattr(model_or_backbone, "stem"):
        backbone = model_or_backbone
        parts = {STEM_NAME: backbone.stem}
        parts.update({block_name(i): block for i, block in enumerate(backbone.blocks)})
        parts[HEAD_NAME] = backbone.head
        return parts
    from models.classifier import split_classifier

    split = split_classifier(model_or_backbone)
    parts = {STEM_NAME: split.stem}
    parts.update({block_name(i): block for i, block in enumerate(split.blocks)})
    parts[HEAD_NAME] = split.head
    return parts


def fingerprint(weights):
    """SHA-256 of a list of arrays (shapes, dtypes and bytes)."""
    digest = hashlib.sha256()
    for array in weights:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def backbone_fingerprints(backbone):
    """{part: SHA-256 of its weights} for stem, block_01.., head of a `Backbone`."""
    return {name: fingerprint(layer.get_weights()) for name, layer in _parts(backbone).items()}


def _same(a, b):
    return len(a) == len(b) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(a, b))


def make_delta(compact, backbone, finetuned_blocks, backbone_name, weights_spec, class_names=None, image_size=None, extra=None):
    """The delta of a compact model against its pretrained backbone, as (meta dict, {name: array}).

    Args:
        compact: a plain classifier (layers normalization, stem, block_01.., head, [dropout,] classifier).
        backbone: the pretrained `Backbone` the run started from (freshly built, untouched).
        finetuned_blocks: indices of the fine-tuned blocks (always included).
        backbone_name: registry name, for `build_backbone` when rebuilding.
        weights_spec: the run's weights spec ("default" or a path).
        class_names, image_size: stored for the device.
        extra: more JSON-able metadata.
    """
    from models.backbones.base import CLASSIFIER_NAME, NORMALIZATION_NAME, block_name
    from models.classifier import DROPOUT_NAME

    model_parts = _parts(compact)
    source_parts = _parts(backbone)
    if list(model_parts) != list(source_parts):
        raise ModelConfigError(
            f"the compact model's parts ({len(model_parts)}) do not match backbone {backbone_name} ({len(source_parts)})"
        )
    finetuned = sorted(int(i) for i in (finetuned_blocks or []))
    forced = {block_name(i) for i in finetuned}
    arrays, included, changed = {}, [], []
    for name, layer in model_parts.items():
        weights = layer.get_weights()
        if not weights:
            continue
        differs = not _same(weights, source_parts[name].get_weights())
        if name in forced or differs:
            included.append(name)
            if differs and name not in forced:
                changed.append(name)
    included.append(CLASSIFIER_NAME)
    for name in included:
        for index, array in enumerate(compact.get_layer(name).get_weights()):
            arrays[f"{name}/{index:03d}"] = np.asarray(array)
    normalization = compact.get_layer(NORMALIZATION_NAME).get_config()
    layer_names = {layer.name for layer in compact.layers}
    classifier = compact.get_layer(CLASSIFIER_NAME)
    fingerprints = backbone_fingerprints(backbone)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "backbone": backbone_name,
        "backbone_weights": weights_spec,
        "backbone_fingerprints": {name: fp for name, fp in fingerprints.items() if name not in included},
        "parts": included,
        "changed_besides_finetuned": changed,
        "finetuned_blocks": finetuned,
        "num_classes": int(classifier.units),
        "class_names": list(class_names) if class_names else None,
        "image_size": int(image_size) if image_size else None,
        "normalization": {key: normalization[key] for key in ("mean", "std", "scale", "channel_order")},
        "dropout": float(compact.get_layer(DROPOUT_NAME).rate) if DROPOUT_NAME in layer_names else 0.0,
    }
    meta.update(extra or {})
    return meta, arrays


def write_delta(path, meta, arrays):
    """Writes the `.npz` delta file; returns its size in bytes."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with replacing(path) as tmp:  # whole or not at all
        np.savez_compressed(tmp, **{META_KEY: np.array(json.dumps(meta, sort_keys=True))}, **arrays)
    return os.path.getsize(path)


def read_delta(path):
    """(meta, {name: array}) of a delta file; ModelConfigError (one line) if it is not one."""
    if not os.path.isfile(path):
        raise ModelConfigError(f"delta file {path} does not exist; write one with python -m app.export --run RUN --delta")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data[META_KEY]))
            arrays = {name: data[name] for name in data.files if name != META_KEY}
    except Exception:
        raise ModelConfigError(f"{path} is not an adaptune task delta (.npz with {META_KEY})") from None
    if meta.get("format") != FORMAT or int(meta.get("version", 0)) > VERSION:
        raise ModelConfigError(f"{path} is not an adaptune task delta of version <= {VERSION}")
    return meta, arrays


def rebuild(path, weights=None, backbone=None):
    """The full classifier from a delta file and the pretrained backbone.

    Args:
        path: a delta file from `write_delta`.
        weights: the backbone's weights spec on this machine ("default" or a file); None = the
            spec recorded in the delta.
        backbone: a ready `Backbone` to use instead of building one (it is modified: its layers
            become the model's).

    Returns:
        a `keras.Model` (image [0, 255] -> logits), the layers of `assemble_classifier`.

    Raises:
        ModelConfigError: not a delta file; the backbone here is not the one the delta was made
            for (fingerprint mismatch, with the first differing part); weights of the wrong shape.
    """
    from models.backbones import build_backbone
    from models.classifier import assemble_classifier

    meta, arrays = read_delta(path)
    if backbone is None:
        backbone = build_backbone(meta["backbone"], weights=weights or meta["backbone_weights"])
    fingerprints = backbone_fingerprints(backbone)
    for name, expected in meta["backbone_fingerprints"].items():
        if fingerprints.get(name) != expected:
            raise ModelConfigError(
                f"backbone {meta['backbone']} here (weights {weights or meta['backbone_weights']}) is not the one "
                f"the delta was made for: {name} differs; pass --weights with the original pretrained file"
            )
    model = assemble_classifier(
        backbone, meta["num_classes"], normalization=meta["normalization"], dropout=meta.get("dropout", 0.0)
    )
    for name in meta["parts"]:
        layer = model.get_layer(name)
        count = len(layer.get_weights())
        values = [arrays[f"{name}/{index:03d}"] for index in range(count) if f"{name}/{index:03d}" in arrays]
        shapes = [tuple(w.shape) for w in layer.get_weights()]
        if len(values) != count or [tuple(v.shape) for v in values] != shapes:
            raise ModelConfigError(f"{path}: weights of {name} do not fit backbone {meta['backbone']} ({len(values)} of {count} arrays)")
        layer.set_weights(values)
    return model


def weight_bytes(model_or_layers):
    """Bytes of every weight (float32 as stored) of a model."""
    return int(sum(np.asarray(w).nbytes for w in model_or_layers.get_weights()))
