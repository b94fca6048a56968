"""Which weights a penalty sees: shared with the source model, or new; kernels only, or all.

    shared w_S: the trainable weights of the parts that existed in the source model, in the order
                the data flows through them: "stem", "block_01" ... "block_NN", "head".
    new w_new:  the trainable weights of the other top-level layers except those a strategy
                trains and regularises itself (`Strategy.own_parts`): the new "classifier".
    neither:    a strategy's own parts, passed as `exclude`. SpotTune's "policy" network (and its
                "gate", "global_k" layers) is one (our decision): it did not exist in the source
                model, so it has no starting point to be pulled back to, and it already has its own
                weight decay in its own optimiser (authors: 1e-3, `--policy-weight-decay`); adding
                beta/2 ||w||^2 on top would regularise it twice (measured: with beta 0.01 that term
                alone was 3x the cross-entropy of a SpotTune ResNet-20, the policy network being
                1.2 M weights).

The selection is generic: it reads the top-level layer names of an assembled classifier
(`models.classifier`) or a SpotTune model (`models.spottune.classifier`) and the `trainable` flags the
strategy set. Under SpotTune each `block_NN` is a `RoutedBlock`; its trainable weights are those
of the fine-tuned copy G_l (the frozen copy F_l is not trainable), so an SP penalty built from a
freshly built network ties G_l to the pretrained weights, exactly as for plain fine-tuning.
"""

import re

import numpy as np

from models.backbones.base import HEAD_NAME, NORMALIZATION_NAME, STEM_NAME
from models.regularizers import PENALIZE  # declared without Keras there (the command line's choices)

# Top-level layers of a SpotTune model that route rather than classify (models.spottune.classifier names).
ROUTING_PARTS = ("policy", "gate", "global_k")
_BLOCK = re.compile(r"^block_\d+$")


def is_source_part(name):
    """True for the top-level layers whose weights come from the source model."""
    return name in (NORMALIZATION_NAME, STEM_NAME, HEAD_NAME) or bool(_BLOCK.match(name))


def is_kernel(variable):
    """True for convolution and dense kernels (also depthwise / pointwise kernels), False for
    BatchNorm parameters and biases: the weights the SP authors penalise ("kernels")."""
    return variable.name.endswith("kernel")


def shared_variables(network, penalize="all"):
    """[(part, variable)] of the trainable shared weights w_S, in data-flow order.

    Args:
        network: an assembled classifier or SpotTune model (top-level layers named normalization,
            stem, block_01.., head, classifier, ...).
        penalize: "all" (every trainable shared weight) or "kernels" (conv / dense kernels only).
    """
    return _select(
        [(layer.name, v) for layer in network.layers if is_source_part(layer.name) for v in layer.trainable_variables],
        penalize,
    )


def new_variables(network, penalize="all", exclude=()):
    """[(part, variable)] of the trainable new weights w_new: the top-level layers that are not
    source parts, except the parts named in `exclude` (a strategy's `own_parts`)."""
    exclude = tuple(exclude)
    return _select(
        [
            (layer.name, v)
            for layer in network.layers
            if not is_source_part(layer.name) and layer.name not in exclude
            for v in layer.trainable_variables
        ],
        penalize,
    )


def _select(pairs, penalize):
    if penalize not in PENALIZE:
        raise ValueError(f"penalize must be one of {PENALIZE}, got {penalize!r}")
    seen, selected = set(), []
    for part, variable in pairs:
        if id(variable) in seen or (penalize == "kernels" and not is_kernel(variable)):
            continue
        seen.add(id(variable))
        selected.append((part, variable))
    return selected


def variable_key(part, variable):
    """A stable, readable key for a variable in w0 / Fisher files: `block_01|block_01.conv1.kernel`.

    It does not depend on which other variables are selected, so w0 saved for "all" weights serves
    a "kernels" penalty too.
    """
    return f"{part}|{variable.path.replace('/', '.')}"


def keyed_variables(pairs):
    """{key: variable} for [(part, variable)], keys from `variable_key`, in order (a repeated key gets `#2`, ...)."""
    keyed = {}
    for part, variable in pairs:
        key, number = variable_key(part, variable), 1
        while key in keyed:
            number += 1
            key = f"{variable_key(part, variable)}#{number}"
        keyed[key] = variable
    return keyed


def part_of_key(key):
    """The part ("stem", "block_03", "head") a `variable_key` belongs to."""
    return key.split("|")[0]


def distances_by_part(current, starts):
    """Per part, `||w - w0||_2`, `||w0||_2` and the relative distance `||w - w0|| / ||w0||`.

    Args:
        current: {key: array} of the weights now (keys from `variable_key`).
        starts: {key: array} of the starting point w0, same keys.

    Returns:
        {part: {"distance": float, "norm_w0": float, "relative": float, "parameters": int}}, parts in
        key order. Keys missing from either side are ignored.
    """
    squared, norms, sizes = {}, {}, {}
    for key in starts:
        if key not in current:
            continue
        part = part_of_key(key)
        w, w0 = np.asarray(current[key], np.float64), np.asarray(starts[key], np.float64)
        squared[part] = squared.get(part, 0.0) + float(np.sum((w - w0) ** 2))
        norms[part] = norms.get(part, 0.0) + float(np.sum(w0**2))
        sizes[part] = sizes.get(part, 0) + int(w0.size)
    table = {}
    for part in squared:
        distance, norm = float(np.sqrt(squared[part])), float(np.sqrt(norms[part]))
        table[part] = {
            "distance": distance,
            "norm_w0": norm,
            "relative": distance / norm if norm > 0 else float("nan"),
            "parameters": sizes[part],
        }
    return table
