"""The trainer of L2T-ww: each batch, a real step, the look-ahead, and a step of the meta-networks."""

import keras
from keras import ops

from models.l2t_ww.lookahead import SGDSettings, evaluate_at, lookahead_objective, values_of
from models.l2t_ww.weighted_matching import WeightedFeatureMatching, as_float
from models.serialization import PACKAGE
from models.transfer_trainer import TransferTrainer, logits_of


def cross_entropy(labels, outputs):
    """Mean sparse cross-entropy of the logits in `outputs` (the outer objective).

    Written from `log_softmax`, op by op: the meta-gradient differentiates this loss's gradient.
    """
    logits = as_float(logits_of(outputs))
    labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
    picked = ops.take_along_axis(ops.log_softmax(logits, axis=-1), ops.expand_dims(labels, -1), axis=-1)
    return -ops.mean(picked)


@keras.saving.register_keras_serializable(package=PACKAGE)
class L2TWWTrainer(TransferTrainer):
    """`TransferTrainer` whose `train_step` is L2T-ww's bilevel step (Jang et al., ICML 2019, Alg. 1;
    authors' `train_l2t_ww.py`), on one batch:

    1. a real step of the network's SGD on `CE + L_wfm (+ any other term)`, for the network and the
       regressors ("inner" weights theta); the meta-networks' gradients of this step are discarded;
    2. T look-ahead steps on L_wfm alone and 3. one on CE, from the state after 1, as functions
       (`models.l2t_ww.lookahead`);
    4. the gradient of CE at the weights reached, through those steps, to the what / where networks
       (phi), applied by their own optimizer (Adam, the `SplitOptimizer`'s secondary);
    5. the network and its optimizer stay as after step 1 (the authors' rollback).

    Requires a `WeightedFeatureMatching` among `terms` and a `SplitOptimizer` whose main optimizer
    is SGD (the strategy's `optimizer` hook gives both). Evaluation is `TransferTrainer`'s.

    Args:
        network: the target network.
        terms: training terms, one of them the `WeightedFeatureMatching`.
        **kwargs: passed to `TransferTrainer`.
    """

    def __init__(self, network, terms=(), **kwargs):
        super().__init__(network, terms, **kwargs)
        found = [term for term in self.terms if isinstance(term, WeightedFeatureMatching)]
        if len(found) != 1:
            raise ValueError(f"L2TWWTrainer needs exactly one WeightedFeatureMatching term, got {len(found)}")
        self.matching = found[0]
        self.meta_loss_tracker = keras.metrics.Mean(name="meta_loss")

    # === Parameter groups ===
    @property
    def inner_variables(self):
        """theta: every trainable weight but the meta-networks' (network, regressors, other terms)."""
        meta = {id(v) for v in self.matching.meta_variables}
        return [v for v in self.trainable_variables if id(v) not in meta]

    @property
    def meta_variables(self):
        """phi: the what / where networks' weights."""
        return list(self.matching.meta_variables)

    # === Losses at given weights ===
    def _outputs_at(self, images, variables, values):
        return evaluate_at(lambda: self(images, training=True), variables, values)

    def inner_loss_function(self, images, source_features, phi):
        """theta values -> L_wfm at (theta, phi) on `images`."""
        theta_vars, phi_vars = self.inner_variables, self.meta_variables

        def loss(theta):
            def run():
                outputs = self(images, training=True)
                return self.matching.matching_loss(source_features, self.matching.target_features(outputs))

            return evaluate_at(run, theta_vars + phi_vars, list(theta) + list(phi))

        return loss

    def outer_loss_function(self, images, labels):
        """theta values -> the cross-entropy at theta on (`images`, `labels`)."""
        theta_vars = self.inner_variables
        return lambda theta: cross_entropy(labels, self._outputs_at(images, theta_vars, list(theta)))

    def meta_objective(self, images, labels, phi, source_features=None):
        """CE after the look-ahead from the current weights and momentum slots, as a function of phi values."""
        if source_features is None:
            source_features = self.matching.source_features(images)
        theta_vars = self.inner_variables
        settings = SGDSettings(self.optimizer.main)
        theta = values_of(theta_vars)
        return lookahead_objective(
            self.inner_loss_function(images, source_features, phi),
            self.outer_loss_function(images, labels),
            theta,
            settings.slots(theta_vars),
            settings.learning_rates(theta_vars),
            settings,
            steps=self.matching.lookahead_steps,
        )

    def meta_gradient(self, images, labels):
        """(meta-objective, d meta-objective / d phi) from the current state."""
        import tensorflow as tf

        source_features = self.matching.source_features(images)
        phi = values_of(self.meta_variables)
        with tf.GradientTape() as tape:
            tape.watch(phi)
            objective = self.meta_objective(images, labels, phi, source_features)
        return objective, tape.gradient(objective, phi)

    # === The step ===
    def real_step(self, x, y, sample_weight=None):
        """Step 1: one step of the network's SGD on CE + L_wfm (+ other terms) for theta; returns the outputs."""
        import tensorflow as tf

        theta_vars = self.inner_variables
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
        self._loss_tracker.update_state(loss, sample_weight=ops.shape(x)[0])
        self.optimizer.main.apply(tape.gradient(loss, theta_vars), theta_vars)
        return y_pred

    def meta_step(self, x, y):
        """Steps 2-4: the look-ahead from the current state and one step of the meta-networks' optimizer."""
        objective, meta_grads = self.meta_gradient(x, y)
        self.meta_loss_tracker.update_state(objective)
        self.optimizer.secondary.apply(meta_grads, self.meta_variables)

    def test_step(self, data):
        """`TransferTrainer`'s evaluation, without the meta-objective (measured in training only)."""
        logs = super().test_step(data)
        logs.pop(self.meta_loss_tracker.name, None)
        return logs

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self.real_step(x, y, sample_weight)
        if self.matching.lookahead_steps > 0 and self.meta_variables:  # with T = 0 phi cannot reach the CE
            self.meta_step(x, y)
        self.optimizer.iterations.assign_add(1)
        # 5. nothing to roll back: the look-ahead never assigned a variable
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
