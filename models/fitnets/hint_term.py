"""The FitNets hint loss between the frozen teacher's and the student's feature maps at one stage."""

import keras
from keras import ops

from models.classifier import call_site
from models.serialization import PACKAGE
from models.teacher.frozen_teacher import frozen_copy
from models.teacher.stages import feature_layer_names, stage_ends
from models.training_term import TrainingTerm


def hint_loss(hint, guided):
    """`0.5 * mean_b sum_{h,w,c} (hint - guided)^2 / (H W C)`: the hint cost of FitNets, per element.

    The authors' cost (adri-romsor/FitNets) is `mean_b sum 0.5 (hint - r(student))^2`, a sum over
    the map; here it is divided by the map's size H W C (our reading), so that one weight means
    the same at every stage and image size. No gradient reaches the hint (the teacher is frozen).

    Args:
        hint: the teacher's feature map `[B, H, W, C]`.
        guided: the regressed student feature map, same shape.
    """
    hint = ops.stop_gradient(ops.cast(hint, "float32"))
    return 0.5 * ops.mean(ops.square(hint - ops.cast(guided, "float32")))


def _identity_kernel(shape, dtype=None):
    """A 1x1 convolution kernel that copies its input: `[1, 1, C, C]` identity."""
    return ops.reshape(ops.eye(shape[-1], dtype=dtype), shape)


@keras.saving.register_keras_serializable(package=PACKAGE)
class HintTerm(TrainingTerm):
    """`weight * hint_loss(T_l(x), r(S_l(x)))`: the FitNets hint, added to the cross-entropy.

    T_l is feature `stage` of a frozen copy of the pretrained network (taken when the term is
    bound, before training: the teacher), always run in inference mode; S_l the same feature of
    the student, read from the trainer's forward pass (`feature_layers`); r a 1x1 convolution
    with bias from the student's channels to the teacher's, starting as the identity when the two
    have as many channels (same network: the hint then starts at zero; our reading), else at
    random (the authors' regressor is
    convolutional; here the two maps have the same size, so 1x1 suffices, and it is linear, as
    L2T-ww's, since a stage output may be linear: MobileNetV2's blocks end without an activation).
    The teacher and the regressor belong to this term, so they live in the resume checkpoint but
    not in the exported network.

    Args:
        stage: feature index: 0 the stem output, k the output of stage k.
        weight: the hint's weight in the loss.
        **kwargs: passed to `TrainingTerm` (`name` is the metric's name).

    Call arguments:
        outputs: the trainer's outputs: a dict with "logits" and "features".
        images: the batch images (the teacher's input).
        training: unused (the teacher always runs in inference mode).

    Example:
    >>> term = HintTerm(stage=2, weight=1.0, name="hint"); term.bind(network)

    Reference:
    - [Romero et al., FitNets: Hints for Thin Deep Nets (ICLR 2015)](https://arxiv.org/abs/1412.6550)
    """

    needs_inputs = True

    def __init__(self, stage=1, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        if float(weight) < 0:
            raise ValueError(f"weight must be >= 0, got {weight!r}")
        self.stage = int(stage)
        self.weight = float(weight)
        self.feature_layers = ()
        self.teacher = None
        self.regressor = None
        self.built = True

    def bind(self, network):
        """Copy the teacher from `network` (its weights now: the pretrained ones) and build the regressor."""
        ends = stage_ends(network)
        if not 0 <= self.stage <= len(ends):
            raise ValueError(f"hint stage {self.stage} is out of range: {network.name} has features 0..{len(ends)}")
        self.feature_layers = (feature_layer_names(ends)[self.stage],)
        self.teacher = frozen_copy(network, ends[: self.stage], name="fitnets_teacher")
        student_channels = call_site(network, self.feature_layers[0])[1].shape[-1]
        teacher_channels = self.teacher.outputs[self.stage].shape[-1]
        # Student and teacher start equal: with as many channels, r starts as the identity, so the
        # hint starts at zero and measures how far the student's map drifts (our reading).
        same = int(student_channels) == int(teacher_channels)
        self.regressor = keras.layers.Conv2D(
            int(teacher_channels), 1, kernel_initializer=_identity_kernel if same else "glorot_uniform", name="regressor"
        )
        self.regressor.build((None, None, None, int(student_channels)))

    def call(self, outputs, images=None, training=None):
        if self.teacher is None:
            raise ValueError(f"term {self.name!r} is not bound to a network: call bind(network) first")
        hint = self.teacher(images, training=False)[self.stage]
        guided = self.regressor(outputs["features"][self.feature_layers[0]])
        return self.weight * hint_loss(hint, guided)

    def get_config(self):
        config = super().get_config()
        config.update({"stage": self.stage, "weight": self.weight})
        return config
