"""L2T-ww's weighted feature matching: which channels ("what") and which pairs of layers ("where")
of a frozen source network the target network should imitate."""

import math

import keras
from keras import ops

from models.classifier import call_site
from models.serialization import PACKAGE
from models.teacher.stages import feature_layer_names, stage_ends
from models.training_term import TrainingTerm

WHAT_PREFIX = "l2t_what_"
WHERE_PREFIX = "l2t_where_"
MATCH_PREFIX = "l2t_match_"


def as_float(x):
    """`x` in float32, or float64 when it is (so that a float64 test network keeps its precision)."""
    return x if keras.backend.standardize_dtype(x.dtype) == "float64" else ops.cast(x, "float32")


def pair_distance(source, target):
    """`mean_{h,w} (S - T)^2` per image and channel, `[B, C]`; S is resized (bilinear) to T's size first.

    The authors resize the source map to the target's width with `F.interpolate(..., mode='bilinear')`
    (half-pixel centres, as `keras.ops.image.resize`). No gradient reaches the source.
    """
    source = ops.stop_gradient(as_float(source))
    target = as_float(target)
    if source.shape[1] is None or source.shape[1:3] != target.shape[1:3]:
        size = ops.shape(target)[1:3]
        source = ops.image.resize(source, (size[0], size[1]), interpolation="bilinear")
    return ops.mean(ops.square(source - target), axis=(1, 2))


def weighted_matching_loss(distances, what, where, beta):
    """`L_wfm = sum_pairs beta * mean_b[ lambda_b * sum_c w_bc * d_bc ]` (Jang et al., eq. 3 and 4; authors' code).

    Args:
        distances: per pair, `[B, C]` channel distances (`pair_distance`).
        what: per pair, `[B, C]` channel weights (softmax over channels).
        where: per pair, `[B, 1]` pair weights (relu6).
        beta: the weight of every pair (authors: 0.5).
    """
    total = 0.0
    for d, w, lam in zip(distances, what, where):
        per_image = ops.sum(ops.cast(w, d.dtype) * d, axis=-1) * ops.cast(ops.reshape(lam, (-1,)), d.dtype)
        total = total + beta * ops.mean(per_image)
    return total


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightedFeatureMatching(TrainingTerm):
    """L2T-ww's matching term `L_wfm` between a frozen source network and the network being trained.

    For every pair (m, n) of source stage m and target stage n (stage 0: the stem output):
    - a 1x1 convolution with bias r_mn maps the target feature T_n to the source's channels (trained
      with the network, by the network's optimizer: "inner" weights);
    - "what": `w = softmax(Dense_{C_m -> C_m}(GAP(S_m)))`, kernel and bias zero (uniform at the start);
    - "where": `lambda = relu6(Dense_{C_m -> 1}(GAP(S_m)))`, bias 1 (kernel: PyTorch's default
      `nn.Linear` initialisation, uniform in +-1/sqrt(C_m), as in the authors' code);
    and `L_wfm = sum_mn beta * mean_b[lambda_b sum_c w_bc mean_hw (S_m - r_mn(T_n))^2]`.
    The what / where networks are the meta-parameters: trained only through the look-ahead
    (`models.l2t_ww.trainer`), by their own optimizer (variables under `l2t_ww/l2t_what_` and
    `l2t_ww/l2t_where_`).

    The source network is `source_backbone` with `source_weights` (another network: its own input
    statistics, or the target's when it declares none), or, when None, a frozen copy of the target
    network as built (same-network transfer from the pretrained weights). It always runs in
    inference mode. Source, regressors and meta-networks belong to this term: they are in the resume
    checkpoint, not in the exported network.

    Args:
        pairs: "all" (every pair of stages >= 1, the authors' default), "same", or "M-N,M-N".
        beta: the weight of each pair (authors: 0.5).
        lookahead_steps: T, the look-ahead steps on L_wfm of the bilevel step (authors: 2); read by the trainer.
        source_backbone: registered backbone name of the source network, or None for a copy of the target.
        source_weights: the source's weights ("default", or a file path).
        **kwargs: passed to `TrainingTerm` (`name` is the metric's name).

    Call arguments:
        outputs: the trainer's outputs: a dict with "logits" and "features" (the target's stage features).
        images: the batch images (the source's input).
        training: unused (the source always runs in inference mode).

    Example:
    >>> term = WeightedFeatureMatching(pairs="all", name="l2t_ww"); term.bind(network)

    Reference:
    - [Jang et al., Learning What and Where to Transfer (ICML 2019)](https://arxiv.org/abs/1905.05901)
    """

    needs_inputs = True

    def __init__(self, pairs="all", beta=0.5, lookahead_steps=2, source_backbone=None, source_weights="default", **kwargs):
        super().__init__(**kwargs)
        self.pairs_spec = pairs
        self.beta = float(beta)
        self.lookahead_steps = int(lookahead_steps)
        self.source_backbone = source_backbone
        self.source_weights = source_weights
        self.pairs = []
        self.feature_layers = ()
        self.source = None
        self.regressors, self.what, self.where = [], [], []
        self.built = True

    # === State ===
    def bind(self, network):
        """Build the source network, the regressors and the meta-networks for target `network`."""
        from models.l2t_ww.pairs import parse_pairs

        ends = stage_ends(network)
        self.feature_layers = tuple(feature_layer_names(ends))
        self.source = self._source_network(network)
        source_channels = [int(t.shape[-1]) for t in self.source.outputs]
        target_channels = [int(call_site(network, name)[1].shape[-1]) for name in self.feature_layers]
        self.pairs = parse_pairs(self.pairs_spec, len(source_channels) - 1, len(target_channels) - 1)
        regressors, what, where = [], [], []
        with keras.name_scope(self.name):
            for m, n in self.pairs:
                channels = source_channels[m]
                bound = 1.0 / math.sqrt(channels)
                regressors.append(keras.layers.Conv2D(channels, 1, name=f"{MATCH_PREFIX}{m}_{n}"))
                regressors[-1].build((None, None, None, target_channels[n]))
                what.append(keras.layers.Dense(channels, kernel_initializer="zeros", bias_initializer="zeros", name=f"{WHAT_PREFIX}{m}_{n}"))
                where.append(
                    keras.layers.Dense(
                        1,
                        kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
                        bias_initializer=keras.initializers.Constant(1.0),
                        name=f"{WHERE_PREFIX}{m}_{n}",
                    )
                )
                what[-1].build((None, channels))
                where[-1].build((None, channels))
        self.regressors, self.what, self.where = regressors, what, where

    def _source_network(self, network):
        from models.teacher.frozen_teacher import frozen_copy, freeze, teacher_features_model

        if self.source_backbone is None:
            return frozen_copy(network, stage_ends(network), name="l2t_source")
        from models.backbones import build_backbone
        from models.preprocessing import ChannelNormalization
        from models.teacher.stages import backbone_stage_ends

        backbone = build_backbone(self.source_backbone, weights=self.source_weights or "default")
        statistics = backbone.source_normalization or {
            key: value for key, value in network.get_layer("normalization").get_config().items() if key in ("mean", "std", "scale", "channel_order")
        }
        normalization = ChannelNormalization(**dict(statistics), name="source_normalization")
        blocks = [freeze(block) for block in backbone.blocks]
        return teacher_features_model(normalization, freeze(backbone.stem), blocks, backbone_stage_ends(backbone), name="l2t_source")

    @property
    def inner_variables(self):
        """The regressors' weights: trained with the network (by its optimizer) and in the look-ahead."""
        return [v for layer in self.regressors for v in layer.trainable_variables]

    @property
    def meta_variables(self):
        """The what / where networks' weights: trained by the meta-gradient only."""
        return [v for layer in self.what + self.where for v in layer.trainable_variables]

    # === Maths ===
    def source_features(self, images):
        """The frozen source's features 0..K on `images`, in inference mode."""
        features = self.source(images, training=False)
        return [ops.stop_gradient(f) for f in features]

    def pair_weights(self, source_features):
        """([B, C_m] "what" weights, [B, 1] "where" weights) of every pair."""
        what, where = [], []
        for (m, _), what_layer, where_layer in zip(self.pairs, self.what, self.where):
            pooled = ops.mean(as_float(source_features[m]), axis=(1, 2))
            what.append(ops.softmax(what_layer(pooled), axis=-1))
            where.append(ops.relu6(where_layer(pooled)))
        return what, where

    def matching_loss(self, source_features, target_features):
        """`L_wfm` from the source's and the target's features 0..K (lists)."""
        what, where = self.pair_weights(source_features)
        distances = [
            pair_distance(source_features[m], regressor(target_features[n]))
            for (m, n), regressor in zip(self.pairs, self.regressors)
        ]
        return weighted_matching_loss(distances, what, where, self.beta)

    def target_features(self, outputs):
        """The target's features 0..K from the trainer's outputs."""
        return [outputs["features"][name] for name in self.feature_layers]

    def call(self, outputs, images=None, training=None):
        if self.source is None:
            raise ValueError(f"term {self.name!r} is not bound to a network: call bind(network) first")
        return self.matching_loss(self.source_features(images), self.target_features(outputs))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pairs": self.pairs_spec,
                "beta": self.beta,
                "lookahead_steps": self.lookahead_steps,
                "source_backbone": self.source_backbone,
                "source_weights": self.source_weights,
            }
        )
        return config
