"""The model that `fit` trains: a classifier plus the extra loss terms of a method."""

import keras

from models.serialization import PACKAGE

INPUT_SUFFIX = "/input"  # features[name + INPUT_SUFFIX]: the input of layer `name`


def logits_of(outputs):
    """The class logits in a network's outputs: the tensor itself, or the "logits" entry of a dict."""
    if isinstance(outputs, dict):
        return outputs["logits"]
    return outputs


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransferTrainer(keras.Model):
    """Trains `network` on `task loss + sum of terms`, and reports each term as a metric.

    `loss = CE(y, logits) + sum_t term_t(outputs)`; every term's batch value is averaged into a
    metric of the same name (so it appears in the progress bar, history.csv, TensorBoard and
    metrics.json, with a `val_` twin on validation data). The compiled loss and metrics see only
    the logits. Two optional hooks for terms that need more than the outputs (DELTA):
    a term with `needs_inputs = True` is called as `term(outputs, images=x, training=...)`; and
    when a term lists `feature_layers` or `feature_inputs` (layer names of the network), the
    trainer runs a view of the network sharing all its layers and returns
    `{"logits": ..., "features": {name: output, name + "/input": input}}`, so intermediate feature
    maps come from the same forward pass. After training, `network` alone is saved as the run's model: the trainer and its
    terms are training machinery, kept in the resume checkpoint (with the terms' state, such as
    the SP starting point w0) but not in the deployable model.

    Args:
        network: a keras.Model mapping images to logits, or to a dict holding "logits".
        terms: `models.training_term.TrainingTerm` layers.
        **kwargs: passed to `keras.Model`.

    Call arguments:
        inputs: a batch of images.
        training: training or inference mode, passed to the network.

    Example:
    >>> trainer = TransferTrainer(classifier, terms=[])
    >>> trainer.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    """

    def __init__(self, network, terms=(), **kwargs):
        super().__init__(**kwargs)
        self.network = network
        self.terms = list(terms)
        self.term_trackers = [keras.metrics.Mean(name=term.name) for term in self.terms]
        self._feature_view = _FeatureView.of(network, self.terms)
        # The network is a built functional model and every term creates its state when it is
        # constructed, so the trainer has nothing left to build (BackupAndRestore needs it built).
        self.built = True

    def call(self, inputs, training=None):
        if self._feature_view is not None:
            return self._feature_view.model(inputs, training=training)
        return self.network(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=logits_of(y_pred), sample_weight=sample_weight, training=training)
        for term, tracker in zip(self.terms, self.term_trackers):
            if getattr(term, "needs_inputs", False):
                value = term(y_pred, images=x, training=training)
            else:
                value = term(y_pred, training=training)
            value = keras.ops.cast(value, loss.dtype)
            tracker.update_state(value)
            loss = loss + share_of_replica(value)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, logits_of(y_pred), sample_weight)

    def train_step(self, data):
        return _reducible_across_workers(super().train_step(data))

    def test_step(self, data):
        return _reducible_across_workers(super().test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Build the optimizer, loss and metrics from the dataset's element spec, not from a batch.

        Under a `tf.distribute` strategy Keras (3.x, TensorFlow backend) builds by pulling one
        distributed batch and averaging it across replicas with `strategy.reduce`, which
        `MultiWorkerMirroredStrategy` cannot do on a `PerReplica` batch ("Attempt to convert a value
        (PerReplica:{...}) to a Tensor"), and which costs a batch read on every other strategy. The
        symbolic build needs only shapes and dtypes, so they are taken from the undistributed
        dataset's `element_spec`.
        """
        if iterator is not None and data_batch is None and self._distribute_strategy is not None:
            spec = _element_spec(iterator)
            if spec is not None:
                data_batch = keras.tree.map_structure(lambda s: keras.KerasTensor(s.shape, s.dtype.name), spec)
                iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "network": keras.saving.serialize_keras_object(self.network),
                "terms": [keras.saving.serialize_keras_object(term) for term in self.terms],
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["network"] = keras.saving.deserialize_keras_object(config["network"])
        config["terms"] = [keras.saving.deserialize_keras_object(term) for term in config.get("terms", [])]
        for term in config["terms"]:
            term.bind(config["network"])  # a term's references to the network, by the names in its config
        return cls(**config)


def share_of_replica(value):
    """`value / R` inside a replica of a tf.distribute strategy with R replicas in sync, else `value`.

    The gradients of the R replicas are summed, and Keras divides the compiled loss by R for that
    (`scale_loss_for_distribution`); a term added to it must be divided too, or a penalty such as
    L2-SP would weigh R times its alpha under `--distribute mirrored` or `multiworker`.
    """
    if keras.backend.backend() != "tensorflow":
        return value
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return value
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value


def _reducible_across_workers(logs):
    """The step's logs, each scalar as a one-element vector under a multi-worker strategy.

    Keras (3.x, TensorFlow backend) averages a step's logs over the workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar ("Invalid reduction dimension 0
    for input with 0 dimensions"); over a one-element vector it is the mean over replicas, a scalar
    again. The values are the same on every replica (the metrics are aggregated across replicas).
    """
    if keras.backend.backend() != "tensorflow":
        return logs
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", lambda: False)
    if not (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and in_multi_worker_mode()):
        return logs
    return {name: keras.ops.reshape(value, (1,)) if len(value.shape) == 0 else value for name, value in logs.items()}


def _element_spec(iterator):
    """The (x, y[, sample_weight]) element spec of a Keras TensorFlow epoch iterator's dataset, or None."""
    adapter = getattr(iterator, "data_adapter", None)
    try:
        spec = adapter.get_tf_dataset().element_spec
    except Exception:  # not a tf.data-backed adapter: let Keras build its own way
        return None
    return spec if isinstance(spec, tuple) else (spec,)


class _FeatureView:
    """A view of `network` (shared layers) returning its logits and the outputs of named layers.

    Held outside Keras' tracking (a plain object), so the trainer's checkpoint saves the network once.
    """

    def __init__(self, model):
        self.model = model

    @classmethod
    def of(cls, network, terms):
        from models.classifier import call_site  # late: models.classifier is above the trainer

        features = {}
        for term in terms:
            for name in getattr(term, "feature_layers", ()):
                features[name] = call_site(network, name)[1]
            for name in getattr(term, "feature_inputs", ()):
                features[name + INPUT_SUFFIX] = call_site(network, name)[0]
        if not features:
            return None
        outputs = {"logits": logits_of(network.output), "features": features}
        return cls(keras.Model(network.input, outputs, name=f"{network.name}_features"))
