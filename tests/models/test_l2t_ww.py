"""L2T-ww: the bilevel step leaves the network as after the real step, the meta-gradient is the
derivative of the look-ahead objective, and with every "where" weight at zero it is fine-tuning."""

import keras
import numpy as np
import pytest

from models.errors import ModelConfigError
from models.l2t_ww.pairs import parse_pairs
from models.l2t_ww.weighted_matching import pair_distance, weighted_matching_loss
from models.strategies import StrategyOptions, get_strategy
from models.strategies.freezing import set_trainable
from models.transfer_trainer import TransferTrainer
from tests.fixtures import images, labels, tiny_classifier

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _sgd(lr=0.1):
    return keras.optimizers.SGD(lr, momentum=0.9)


def _l2t(extra=None, bn="train", lr=0.1):
    network, _ = tiny_classifier()
    for layer in network.layers:
        set_trainable(layer, True, bn)
    strategy = get_strategy("l2t_ww")
    options = StrategyOptions(bn=bn, extra=dict(extra or {}))
    terms = strategy.training_terms(network, options)
    trainer = strategy.trainer_class(network, terms=terms, name="trainer")
    trainer.compile(optimizer=strategy.optimizer(network, _sgd(lr), options), loss=CE)
    trainer.optimizer.build(trainer.trainable_variables)
    return trainer, network, terms[0]


def _numpy(variables):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in variables]


def test_pairs_flag():
    assert parse_pairs("all", 2, 3) == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert parse_pairs("same", 4, 3) == [(1, 1), (2, 2), (3, 3)]
    assert parse_pairs("2-1,0-0", 2, 2) == [(2, 1), (0, 0)]
    with pytest.raises(ModelConfigError, match="stages 0..2"):
        parse_pairs("3-1", 2, 2)


def test_matching_loss_is_the_authors_formula():
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(2, 4, 4, 3)), rng.normal(size=(2, 4, 4, 3))
    what = np.full((2, 3), 1 / 3)
    where = np.array([[0.5], [2.0]])
    d = ((source - target) ** 2).mean(axis=(1, 2))
    expected = 0.5 * np.mean(where[:, 0] * (what * d).sum(axis=1))
    loss = weighted_matching_loss([pair_distance(source, target)], [what], [where], beta=0.5)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # the source is resized (bilinear) to the target's size
    assert tuple(pair_distance(rng.normal(size=(2, 2, 2, 3)), target).shape) == (2, 3)


def test_what_starts_uniform_and_where_at_one():
    trainer, network, term = _l2t()
    what, where = term.pair_weights(term.source_features(images()))
    assert len(term.pairs) == 4  # stages 1..2 of the source x stages 1..2 of the target
    for w in what:
        np.testing.assert_allclose(np.asarray(w), 1.0 / w.shape[-1], rtol=1e-6)
    assert all(np.all(np.asarray(lam) >= 0) for lam in where)
    assert [v.path.split("/")[0] for v in term.meta_variables] == ["l2t_ww"] * len(term.meta_variables)


def test_the_lookahead_leaves_weights_and_optimizer_state_exactly_as_after_the_real_step():
    trainer, network, term = _l2t()
    x, y = images(), labels()
    start = _numpy(trainer.variables)
    start_main = _numpy(trainer.optimizer.main.variables)
    # the real step alone: the reference
    trainer.real_step(x, y)
    reference = _numpy(network.variables + term.inner_variables)
    reference_main = _numpy(trainer.optimizer.main.variables)
    reference_meta = _numpy(term.meta_variables)
    for variable, value in zip(trainer.variables, start):
        variable.assign(value)
    for variable, value in zip(trainer.optimizer.main.variables, start_main):
        variable.assign(value)
    # the whole bilevel step
    trainer.train_step((x, y))
    for a, b in zip(reference, _numpy(network.variables + term.inner_variables)):
        np.testing.assert_array_equal(a, b)  # BatchNorm statistics included
    for a, b in zip(reference_main, _numpy(trainer.optimizer.main.variables)):
        np.testing.assert_array_equal(a, b)  # momentum slots and the iteration count
    assert any(not np.array_equal(a, b) for a, b in zip(reference_meta, _numpy(term.meta_variables)))


def test_the_meta_gradient_matches_a_finite_difference():
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")  # the global policy, once created, no longer follows floatx
    try:
        # BatchNorm in inference mode: TensorFlow's batch moments stop the gradient of the batch
        # mean inside the variance, so through training-mode BatchNorm the second-order terms are
        # approximate (about 1 % here; docs/methods/l2t_ww.md); everything else is exact.
        trainer, network, term = _l2t(bn="frozen", lr=0.1)
        x, y = images().astype("float64"), labels()
        assert {v.dtype for v in trainer.variables} == {"float64"}
        trainer.real_step(x, y)
        _, grads = trainer.meta_gradient(x, y)
        phi = _numpy(term.meta_variables)
        paths = [v.path for v in term.meta_variables]
        for path in ("l2t_ww/l2t_where_1_1/bias", "l2t_ww/l2t_where_2_2/kernel", "l2t_ww/l2t_what_2_1/bias"):
            index, eps = paths.index(path), 1e-5
            values = []
            for sign in (1, -1):
                moved = [p.copy() for p in phi]
                moved[index].flat[0] += sign * eps
                values.append(float(trainer.meta_objective(x, y, [keras.ops.convert_to_tensor(p) for p in moved])))
            finite = (values[0] - values[1]) / (2 * eps)
            analytic = float(np.asarray(grads[index]).flat[0])
            assert abs(analytic) > 1e-7, path
            np.testing.assert_allclose(analytic, finite, rtol=1e-5, err_msg=path)
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")


def test_with_every_where_weight_at_zero_it_is_plain_fine_tuning():
    trainer, network, term = _l2t()
    for layer in term.where:
        for variable in layer.trainable_variables:
            variable.assign(np.zeros(variable.shape, "float32"))
    plain, _ = tiny_classifier()
    finetune = TransferTrainer(plain, [])
    finetune.compile(optimizer=_sgd(), loss=CE)
    x, y = images(8), labels(8)
    trainer.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    finetune.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(_numpy(network.variables), _numpy(plain.variables)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for layer in term.where:  # relu6 is flat at 0: the meta-gradient cannot revive a pair
        assert not np.any(_numpy(layer.trainable_variables)[1])


def test_another_source_network_and_only_the_target_is_saved(tmp_path):
    trainer, network, term = _l2t({"source_backbone": "resnet20", "source_weights": "none", "l2t_pairs": "all"})
    assert len(term.pairs) == 3 * 2
    history = trainer.fit(images(8, size=16), labels(8), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["l2t_ww"][-1]) and "meta_loss" in history.history
    network.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.count_params() == tiny_classifier()[0].count_params()


def test_l2t_ww_needs_sgd():
    network, _ = tiny_classifier()
    with pytest.raises(ModelConfigError, match="--optimizer sgd"):
        get_strategy("l2t_ww").optimizer(network, keras.optimizers.Adam(), StrategyOptions())
