"""The hybrid forward paths of Hybrid Forward: stages taken in turn from the student and the teacher."""

import keras

from models.backbones.base import block_name
from models.classifier import DROPOUT_NAME, split_classifier
from models.teacher.frozen_teacher import TEACHER_PREFIX
from models.teacher.stages import stage_segments

STUDENT, TEACHER = "S", "T"


def alternating(num_stages, first):
    """The owner of each stage in a path that starts with `first` and alternates: S,T,S,... or T,S,T,..."""
    other = TEACHER if first == STUDENT else STUDENT
    return "".join(first if k % 2 == 0 else other for k in range(num_stages))


class HybridPaths:
    """`images -> stage 1 of owner[0] -> stage 2 of owner[1] -> ... -> student head -> classifier`.

    Stage k is the blocks of segment k (`models.teacher.stages.stage_segments`); the stem goes with
    stage 1 (its owner's stem). The head (the layers after the last block), the optional Dropout and
    the classifier are always the student's: the one target head (our reading). Teacher layers
    always run in inference mode; the student's run with `training`.
    A plain object (untracked): it only refers to layers that the network and the teacher own.

    Args:
        network: the student, an assembled classifier.
        teacher: its frozen copy (`models.teacher.frozen_teacher.frozen_copy`, whose layers are
            named `teacher_<part>`).
        ends: the last block index of each stage.
    """

    def __init__(self, network, teacher, ends):
        parts = split_classifier(network)
        self.segments = stage_segments(ends)
        self.normalization = parts.normalization
        self.stems = {STUDENT: parts.stem, TEACHER: teacher.get_layer(TEACHER_PREFIX + parts.stem.name)}
        self.blocks = {
            STUDENT: parts.blocks,
            TEACHER: [teacher.get_layer(TEACHER_PREFIX + block_name(i)) for i in range(ends[-1] + 1)],
        }
        self.head = parts.head
        self.classifier = parts.classifier
        names = {layer.name for layer in network.layers}
        self._dropout = network.get_layer(DROPOUT_NAME) if DROPOUT_NAME in names else None

    @property
    def num_stages(self):
        return len(self.segments)

    def layers_of(self, owners):
        """The layers a path with `owners` (a string of S / T, one per stage) runs, in order (for tests)."""
        layers = [self.stems[owners[0]]]
        for owner, segment in zip(owners, self.segments):
            layers += [self.blocks[owner][i] for i in segment]
        return layers + [self.head, self.classifier]

    def __call__(self, images, owners, training=None):
        """Logits of the hybrid path `owners` (e.g. "STS") on `images`."""
        if len(owners) != self.num_stages:
            raise ValueError(f"a path needs one owner per stage ({self.num_stages}), got {owners!r}")

        def run(layer, x, owner):
            return layer(x, training=training if owner == STUDENT else False)

        x = run(self.stems[owners[0]], self.normalization(images), owners[0])
        for owner, segment in zip(owners, self.segments):
            for index in segment:
                x = run(self.blocks[owner][index], x, owner)
        features = self.head(x, training=training)
        if self._dropout is not None:
            features = self._dropout(features, training=training)
        return self.classifier(features)


def hybrid_logits(paths, images, owners, training=None):
    """`paths(images, owners)` with the student's BatchNorm statistics and random state left as they were.

    The hybrid paths feed the student's stages features of the teacher's; in training mode their
    BatchNorm would fold those batches into the student's moving statistics. Run in a
    `keras.StatelessScope`, every variable reads its value as usual (gradients flow) and the
    updates are dropped: the student's statistics come from the student's own path only (our reading).
    """
    with keras.StatelessScope():
        return paths(images, owners, training=training)
