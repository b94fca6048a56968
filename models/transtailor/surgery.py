"""Channel groups of a flat classifier and the rebuild that removes channels, inserts or folds scales.

A prunable channel group (our reading of "remove the filter and the matching input channels of the next
layer"; TransTailor, Liu et al. AAAI 2021, gives no rule for residual networks): the output channels of a
convolution inside a block that reach exactly one other convolution of the same block through a chain of
channel-wise layers (BatchNorm, activations, zero padding, depthwise convolutions, `FilterScale`), every
tensor of the chain read by that one layer only. Channels that meet a residual addition, leave the block,
or feed the head are never pruned: in a BasicBlock that is conv1's output (conv2's output meets the
shortcut); in MobileNetV2 the expanded channels (expand conv -> BN -> ReLU6 -> depthwise -> BN -> ReLU6 ->
project); the first MobileNetV2 block (no expand convolution) has none.
Removing channel c of a group removes filter c of the producing convolution, channel c of every chain
layer and input channel c of the consuming convolution.
"""

import dataclasses

import keras
import numpy as np

from models.adafilter.replay import consumers, graph_nodes, renamed_clone
from models.backbones.base import clone_layer
from models.transtailor.filter_scale import FilterScale

CHANNELWISE = (
    keras.layers.BatchNormalization,
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.ZeroPadding2D,
    keras.layers.DepthwiseConv2D,
    FilterScale,
)


@dataclasses.dataclass
class ChannelGroup:
    """One prunable group: `producer` conv -> `members` (channel-wise, in order) -> `consumer` conv."""

    producer: str
    members: list
    consumer: str
    channels: int

    @property
    def scale_after(self):
        """The layer a `FilterScale` follows: the chain's last BatchNorm (else the producer)."""
        batch_norms = [m for m, kind in self.members if kind == "bn"]
        return batch_norms[-1] if batch_norms else self.producer

    @property
    def scale_name(self):
        return f"{self.producer}_scale"


def _is_dense_conv(layer):
    return isinstance(layer, keras.layers.Conv2D) and not isinstance(layer, keras.layers.DepthwiseConv2D) and layer.groups == 1


def _block_of(name):
    parts = name.split("_")
    return "_".join(parts[:2]) if len(parts) > 2 and parts[0] == "block" else None


def _kind(layer):
    if isinstance(layer, keras.layers.BatchNormalization):
        return "bn"
    if isinstance(layer, FilterScale):
        return "scale"
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return "depthwise" if int(layer.depth_multiplier) == 1 else None
    return "other"


def channel_groups(model):
    """The prunable `ChannelGroup`s of a flat classifier, in data-flow order."""
    readers = consumers(model)
    groups = []
    for node in graph_nodes(model):
        layer = node.operation
        block = _block_of(layer.name)
        if not _is_dense_conv(layer) or block is None:
            continue
        tensor, members = node.output_tensors[0], []
        while True:
            users = readers.get(id(tensor), [])
            if len(users) != 1:
                break
            user = users[0].operation
            if isinstance(user, CHANNELWISE) and _kind(user) is not None:
                members.append((user.name, _kind(user)))
                tensor = users[0].output_tensors[0]
                continue
            if _is_dense_conv(user) and _block_of(user.name) == block:
                groups.append(ChannelGroup(layer.name, members, user.name, int(layer.filters)))
            break
    return groups


def rebuild(model, keep=None, insert_scales=False, fold_scales=False, name=None):
    """A new flat classifier with channels removed, `FilterScale`s inserted, or scales folded into BatchNorm.

    Args:
        model: a flat classifier (`models.transtailor.flat_network`), with or without `FilterScale`s.
        keep: {group producer name: indices of the channels kept}; groups not named keep all.
        insert_scales: add a `FilterScale` (alpha = 1) after each group's `scale_after` layer.
        fold_scales: remove every `FilterScale`, multiplying the BatchNorm before it (gamma and beta) by
            its alpha: `s * (gamma * x_hat + beta) = (s * gamma) * x_hat + s * beta`, exact.

    Returns:
        the new model; every weight is copied (sliced where channels go), the old model is untouched.
    """
    groups = channel_groups(model)
    keep = {k: np.asarray(sorted(int(i) for i in v)) for k, v in (keep or {}).items()}
    out_keep, in_keep = {}, {}
    for group in groups:
        if group.producer in keep:
            kept = keep[group.producer]
            out_keep[group.producer] = kept
            for member, _ in group.members:
                out_keep[member] = in_keep[member] = kept
            in_keep[group.consumer] = kept
    scale_after = {g.scale_after: g.scale_name for g in groups} if insert_scales else {}
    fold_into = {}  # BatchNorm name -> alpha of the FilterScale after it
    if fold_scales:
        for node in graph_nodes(model):
            if isinstance(node.operation, FilterScale):
                source = node.input_tensors[0]
                producer = next(n for n in graph_nodes(model) if any(t is source for t in n.output_tensors))
                if not isinstance(producer.operation, keras.layers.BatchNormalization):
                    raise ValueError(f"{node.operation.name} does not follow a BatchNorm: it cannot be folded")
                fold_into[producer.operation.name] = np.asarray(node.operation.alpha)

    inputs = keras.Input(shape=model.inputs[0].shape[1:], name=model.inputs[0].name)
    values = {id(model.inputs[0]): inputs}
    for node in graph_nodes(model):
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        args, kwargs = node.arguments.fill_in(values)
        if fold_scales and isinstance(layer, FilterScale):
            values[id(node.output_tensors[0])] = args[0]
            continue
        new, weights = _sliced(layer, in_keep.get(layer.name), out_keep.get(layer.name), fold_into.get(layer.name))
        out = new(*args, **kwargs)
        if weights is not None:
            new.set_weights(weights)
        if layer.name in scale_after:
            out = FilterScale(name=scale_after[layer.name])(out)
        for tensor, value in zip(node.output_tensors, keras.tree.flatten(out)):
            values[id(tensor)] = value
    return keras.Model(inputs, values[id(model.outputs[0])], name=name or model.name)


def _sliced(layer, in_kept, out_kept, fold=None):
    """(new layer, its weights or None) for `layer` with input / output channels kept and a scale folded in."""
    weights = [np.asarray(w) for w in layer.get_weights()]
    if isinstance(layer, keras.Model) or not _is_plain(layer):
        return clone_layer(layer), None
    config = layer.get_config()
    if isinstance(layer, keras.layers.DepthwiseConv2D) and out_kept is not None:
        weights = [weights[0][:, :, out_kept, :]] + [b[out_kept] for b in weights[1:]]
    elif _is_dense_conv(layer):
        if in_kept is not None:
            weights[0] = weights[0][:, :, in_kept, :]
        if out_kept is not None:
            config["filters"] = int(len(out_kept))
            weights = [weights[0][..., out_kept]] + [b[out_kept] for b in weights[1:]]
    elif isinstance(layer, keras.layers.BatchNormalization):
        if out_kept is not None:
            weights = [w[out_kept] for w in weights]
        if fold is not None:
            if not (layer.scale and layer.center):
                raise ValueError(f"{layer.name}: folding a scale needs BatchNorm with gamma and beta")
            alpha = fold[out_kept] if out_kept is not None else fold
            weights[0] = weights[0] * alpha
            weights[1] = weights[1] * alpha
    elif isinstance(layer, FilterScale) and out_kept is not None:
        weights = [weights[0][out_kept]]
    new = layer.__class__.from_config(config)
    return new, weights if weights else None


def _is_plain(layer):
    """Layers rebuilt from their config (everything but nested models and multi-part custom layers)."""
    return not getattr(layer, "_layers", None) or isinstance(layer, (keras.layers.BatchNormalization,) + CHANNELWISE)
