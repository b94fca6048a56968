"""Where the stages of an assembled classifier end: the feature maps teacher-student methods compare.

A stage is a run of blocks at one resolution (`Backbone.stages`). A classifier loaded from a
`.keras` file no longer knows its backbone's stage list, so the ends are found from the network
itself: one probe image goes through the stem and the blocks, and a stage ends at a block after
which the resolution falls (and at the last block). On every registered backbone this gives
`Backbone.stages` back (the test checks it).

Feature index 0 is the stem output, index k >= 1 the output of stage k (the numbering of the
L2T-ww authors' code, `forward_with_features`).
"""

import numpy as np

from models.backbones.base import STEM_NAME, block_name

PROBE_SIZE = 64  # divisible by 32: every registered backbone halves its resolution at most 5 times


def stage_ends(network, probe_size=PROBE_SIZE):
    """Indices of the last block of each stage of `network`, an assembled classifier.

    Args:
        network: a model built by `models.classifier.assemble_classifier` (or loaded from its file).
        probe_size: side of the probe image in pixels.

    Returns:
        ascending block indices, the last one always the network's last block.
    """
    import keras

    from models.classifier import split_classifier

    parts = split_classifier(network)
    x = parts.stem(parts.normalization(np.zeros((1, probe_size, probe_size, 3), "float32")), training=False)
    sides = []
    for block in parts.blocks:
        x = block(x, training=False)
        sides.append(int(keras.ops.shape(x)[1]))
    return [i for i in range(len(sides)) if i == len(sides) - 1 or sides[i + 1] < sides[i]]


def backbone_stage_ends(backbone):
    """The last block index of each stage of a `Backbone` (from its declared `stages`)."""
    return [int(stage[-1]) for stage in backbone.stages]


def feature_layer_names(ends):
    """Layer names whose outputs are the features 0..K: the stem, then the last block of each stage."""
    return [STEM_NAME] + [block_name(end) for end in ends]


def stage_segments(ends):
    """Block indices of each stage: [[0, .., ends[0]], [ends[0] + 1, .., ends[1]], ...]."""
    segments, start = [], 0
    for end in ends:
        segments.append(list(range(start, end + 1)))
        start = end + 1
    return segments
