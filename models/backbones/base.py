"""What every backbone exposes: a stem, an ordered list of blocks, a head (METHODS.md section 1).

Every strategy addresses "block l" through `Backbone.blocks`. In an assembled classifier the parts
are nested layers with fixed names, so a saved model can be taken apart again after loading:

    image -> "normalization" -> "stem" -> "block_01" ... "block_NN" -> "head" -> "classifier"
"""

import dataclasses

import keras

STEM_NAME = "stem"
HEAD_NAME = "head"
CLASSIFIER_NAME = "classifier"
NORMALIZATION_NAME = "normalization"


def block_name(index):
    """Layer name of block `index` (0-based) in an assembled model: block_01, block_02, ..."""
    return f"block_{index + 1:02d}"


@dataclasses.dataclass
class Backbone:
    """A pretrained (or freshly initialised) network cut into addressable parts.

    Attributes:
        name: registry name, e.g. "resnet20".
        stem: layer from the normalised image to the input of the first block.
        blocks: the ordered, routable blocks. Each is a Keras layer (custom registered layer or
            functional sub-model) that `clone_layer` can duplicate with its weights.
        head: layer from the last block's output to a feature vector (pre-pool ops + global pool).
        feature_dim: size of the head's feature vector.
        stages: block indices grouped by stage (resolution), e.g. [[0, 1, 2], [3, 4, 5], [6, 7, 8]].
        source_normalization: keyword arguments for `ChannelNormalization` describing the input the
            pretrained weights expect, or None when the dataset's own statistics should be used.
        source_classifier: the pretrained classifier (Dense on the head features) when the weights
            carry one, else None.
        source_class_names: names of the source classes, aligned with `source_classifier`.
        default_image_size: the input size the backbone was designed for.
        weights_source: where the weights came from ("random", or a file path).
        recipe: training settings this backbone needs from its pretrained weights (for instance
            {"bn": "frozen", "lr": 0.001} for the ImageNet MobileNets), applied where the user gave no flag.
    """

    name: str
    stem: keras.layers.Layer
    blocks: list
    head: keras.layers.Layer
    feature_dim: int
    stages: list
    source_normalization: dict | None
    source_classifier: keras.layers.Layer | None
    source_class_names: list | None
    default_image_size: int
    weights_source: str = "random"
    recipe: dict = dataclasses.field(default_factory=dict)

    @property
    def num_blocks(self):
        return len(self.blocks)


def clone_layer(layer, name=None):
    """A new, independent layer with the same architecture and the same weights as `layer`.

    Works for registered custom layers (rebuilt from `get_config`) and for functional or
    sequential sub-models (`keras.models.clone_model`). The clone is built before the weights are
    copied, so it can be called on tensors of any compatible shape afterwards.

    Args:
        layer: a built layer.
        name: name of the clone; by default the name of `layer`. Give a new one when the original
            and the clone will live in the same model (layer names must be unique there).
    """
    if isinstance(layer, keras.Sequential):
        clone = keras.models.clone_model(layer)
        if name is not None:
            clone = keras.Sequential(clone.layers, name=name)
    elif isinstance(layer, keras.Model) and type(layer).__name__ == "Functional":
        clone = keras.models.clone_model(layer)
        if name is not None:
            clone = keras.Model(clone.input, clone.output, name=name)
    else:
        config = layer.get_config()
        if name is not None:
            config["name"] = name
        clone = layer.__class__.from_config(config)
    if not clone.built:
        clone.build(_input_shape_of(layer))
    clone.set_weights(layer.get_weights())
    return clone


def _input_shape_of(layer):
    shape = getattr(layer, "_build_shapes_dict", None)
    if shape:
        return next(iter(shape.values()))
    return layer.input.shape


def build_parts(stem, blocks, head, channels=3):
    """Builds stem, blocks and head one after the other for inputs `[batch, None, None, channels]`.

    Returns:
        the feature dimension (the head's output size).
    """
    shape = (None, None, None, channels)
    for layer in [stem, *blocks, head]:
        if not layer.built:
            layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape[-1]
