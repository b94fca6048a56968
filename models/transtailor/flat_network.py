"""A backbone as one flat functional classifier of ordinary Keras layers, the form TransTailor prunes.

    image -> normalization -> stem -> [every block replayed layer by layer] -> head -> classifier

Every convolution and BatchNorm inside the blocks becomes a top-level layer named `block_NN_<name>`,
so channels can be removed anywhere inside a block by rebuilding the graph (`models.transtailor.surgery`).
Before any pruning it computes exactly what `assemble_classifier` computes.
"""

import keras

from models.adafilter.replay import renamed_clone, replay_block
from models.backbones.base import CLASSIFIER_NAME, NORMALIZATION_NAME, block_name
from models.classifier import classify
from models.errors import ModelConfigError
from models.preprocessing import ChannelNormalization


def build_flat_classifier(backbone, num_classes, normalization=None, dropout=0.0, name=None):
    """The flat classifier of `backbone` (blocks: `BasicBlock`s or functional sub-models), new Dense head."""
    norm_kwargs = normalization if normalization is not None else backbone.source_normalization
    if norm_kwargs is None:
        raise ModelConfigError(f"{backbone.name} has no source normalization: pass the dataset's mean and std")

    # === Functional Model ===
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = ChannelNormalization(**dict(norm_kwargs), name=NORMALIZATION_NAME)(inputs)
    x = backbone.stem(x)
    for b, block in enumerate(backbone.blocks):
        prefix = block_name(b)

        def plain_conv(x, conv, bn, index, prefix=prefix):
            new_conv = renamed_clone(conv, f"{prefix}_{conv.name}")
            y = new_conv(x)
            new_conv.set_weights(conv.get_weights())
            if bn is None:
                return y
            new_bn = renamed_clone(bn, f"{prefix}_{bn.name}")
            y = new_bn(y)
            new_bn.set_weights(bn.get_weights())
            return y

        x = replay_block(block, x, prefix, plain_conv)
    outputs = classify(backbone.head(x), keras.layers.Dense(int(num_classes), name=CLASSIFIER_NAME), dropout)
    return keras.Model(inputs, outputs, name=name or f"{backbone.name}_flat")
