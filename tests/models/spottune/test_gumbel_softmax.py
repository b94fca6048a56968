"""GumbelSoftmax and TemperatureSchedule: hard samples, temperature, deterministic path, gradients, export."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.spottune.gumbel_softmax import GumbelSoftmax, hard_one_hot
from models.spottune.temperature_schedule import TemperatureSchedule

FORBIDDEN_OPS = {"ArgMax", "ArgMin", "Bitcast", "BitwiseAnd"}


def random_logits(shape, seed=0, scale=2.0):
    return np.random.default_rng(seed).normal(scale=scale, size=shape).astype("float32")


@pytest.mark.parametrize("choices", [2, 5])
def test_hard_samples_are_exactly_one_hot(choices):
    gate = GumbelSoftmax(seed=1)
    samples = keras.ops.convert_to_numpy(gate(random_logits((64, 3, choices)), training=True))
    assert samples.shape == (64, 3, choices)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    np.testing.assert_array_equal(samples.sum(axis=-1), 1.0)


def test_hard_samples_follow_the_probabilities():
    logits = np.tile(np.array([[0.0, 1.0]], "float32"), (20000, 1))
    samples = keras.ops.convert_to_numpy(GumbelSoftmax(seed=3)(logits, training=True))
    expected = 1.0 / (1.0 + math.exp(-1.0))  # P(choice 1) = softmax(logits)[1], whatever tau
    assert abs(samples[:, 1].mean() - expected) < 0.02


def test_lower_temperature_gives_more_peaked_soft_samples():
    logits = random_logits((4000, 2), seed=2, scale=1.0)
    peaks = []
    for tau in (100.0, 5.0, 1.0, 0.1):
        gate = GumbelSoftmax(temperature=tau, hard=False, seed=7)
        soft = keras.ops.convert_to_numpy(gate(logits, training=True))
        np.testing.assert_allclose(soft.sum(axis=-1), 1.0, rtol=1e-6)
        peaks.append(soft.max(axis=-1).mean())
    assert all(a < b for a, b in zip(peaks, peaks[1:])), peaks
    assert peaks[0] < 0.51  # tau = 100: almost uniform
    assert peaks[-1] > 0.95  # tau = 0.1: almost one-hot


def test_high_temperature_soft_samples_approach_uniform():
    gate = GumbelSoftmax(temperature=1e4, hard=False, seed=0)
    soft = keras.ops.convert_to_numpy(gate(random_logits((100, 4, 5)), training=True))
    np.testing.assert_allclose(soft, 0.2, atol=1e-2)


def test_deterministic_inference_is_the_most_likely_choice():
    logits = random_logits((50, 4, 3), seed=5)
    gate = GumbelSoftmax(seed=0)
    out = keras.ops.convert_to_numpy(gate(logits, training=False))
    np.testing.assert_array_equal(out, np.eye(3, dtype="float32")[logits.argmax(axis=-1)])
    # No noise: the same answer every time.
    np.testing.assert_array_equal(out, keras.ops.convert_to_numpy(gate(logits, training=False)))
    # Soft deterministic output: softmax(logits / tau).
    soft = keras.ops.convert_to_numpy(GumbelSoftmax(temperature=2.0, hard=False)(logits, training=False))
    expected = np.exp(logits / 2.0) / np.exp(logits / 2.0).sum(axis=-1, keepdims=True)
    np.testing.assert_allclose(soft, expected, rtol=1e-5)


def test_hard_one_hot_breaks_ties_towards_the_first_choice():
    x = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [3.0, 3.0]], "float32").reshape(2, 2, 2)
    x = np.concatenate([x, np.array([[[2.0, 5.0], [5.0, 5.0]]], "float32")], axis=0)
    out = keras.ops.convert_to_numpy(hard_one_hot(keras.ops.convert_to_tensor(x)))
    np.testing.assert_array_equal(out.sum(axis=-1), 1.0)
    np.testing.assert_array_equal(out[..., 0], [[1, 1], [0, 1], [0, 1]])


def test_sample_inference_draws_like_training():
    logits = np.zeros((200, 2), "float32")
    deterministic = keras.ops.convert_to_numpy(GumbelSoftmax()(logits, training=False))
    np.testing.assert_array_equal(deterministic[:, 0], 1.0)  # tie -> first choice
    sampled = keras.ops.convert_to_numpy(GumbelSoftmax(inference="sample", seed=4)(logits, training=False))
    assert 50 < sampled[:, 1].sum() < 150


def test_same_seed_same_samples():
    logits = random_logits((16, 3, 2))
    a = GumbelSoftmax(seed=11)(logits, training=True)
    b = GumbelSoftmax(seed=11)(logits, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))


def test_straight_through_gradient_is_the_soft_sample_gradient():
    logits = tf.Variable(random_logits((8, 3, 2), seed=9))
    weights = tf.constant(random_logits((8, 3, 2), seed=10))
    gradients = {}
    for hard in (True, False):
        gate = GumbelSoftmax(hard=hard, seed=21)  # same seed: the same noise for both
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(gate(logits, training=True) * weights)
        gradients[hard] = tape.gradient(loss, logits).numpy()
    assert np.abs(gradients[True]).max() > 1e-4
    np.testing.assert_allclose(gradients[True], gradients[False], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("training", [False, True])
def test_graph_has_no_argmax_or_bitwise_ops(training):
    gate = GumbelSoftmax(seed=0)
    function = tf.function(lambda x: gate(x, training=training))
    graph = function.get_concrete_function(tf.TensorSpec([None, 4, 2], tf.float32)).graph
    types = {op.type for op in graph.get_operations()}
    assert not types & FORBIDDEN_OPS, types & FORBIDDEN_OPS
    if not training:
        assert not any("Random" in t for t in types), types  # deterministic path: no noise at all


def test_temperature_is_a_non_trainable_variable():
    gate = GumbelSoftmax(temperature=3.0)
    assert gate.trainable_weights == []
    assert float(keras.ops.convert_to_numpy(gate.temperature)) == 3.0
    gate.temperature.assign(0.5)
    soft = GumbelSoftmax(temperature=0.5, hard=False)
    gate.hard = False
    logits = random_logits((5, 2))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(gate(logits, training=False)),
        keras.ops.convert_to_numpy(soft(logits, training=False)),
        rtol=1e-6,
    )


def test_invalid_arguments():
    with pytest.raises(ValueError):
        GumbelSoftmax(temperature=0.0)
    with pytest.raises(ValueError):
        GumbelSoftmax(inference="argmax")
    with pytest.raises(ValueError):
        TemperatureSchedule(schedule="linear")


def _gated_model(temperature=5.0, seed=0):
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6)(inputs)
    x = keras.layers.Reshape((3, 2))(x)
    x = GumbelSoftmax(temperature=temperature, seed=seed, name="gate")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(1)(x))


def test_temperature_schedule_values():
    constant = TemperatureSchedule(5.0)
    assert [constant.value(e) for e in (0, 10, 100)] == [5.0, 5.0, 5.0]
    decay = TemperatureSchedule(5.0, "exponential", rate=0.1, minimum=1.0)
    assert decay.value(0) == 5.0
    assert decay.value(3) == pytest.approx(5.0 * math.exp(-0.3))
    assert decay.value(1000) == 1.0


def test_temperature_schedule_drives_the_gate_during_fit():
    model = _gated_model()
    model.compile(optimizer="sgd", loss="mse")
    schedule = TemperatureSchedule(4.0, "exponential", rate=0.5, minimum=0.1)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    history = model.fit(x, x[:, :1], epochs=3, batch_size=4, verbose=0, callbacks=[schedule])
    expected = [schedule.value(e) for e in range(3)]
    np.testing.assert_allclose(history.history["temperature"], expected, rtol=1e-6)
    gate = model.get_layer("gate")
    assert float(keras.ops.convert_to_numpy(gate.temperature)) == pytest.approx(expected[-1])
    # Resuming at epoch 3 continues the schedule.
    model.fit(x, x[:, :1], initial_epoch=3, epochs=4, batch_size=4, verbose=0, callbacks=[schedule])
    assert float(keras.ops.convert_to_numpy(gate.temperature)) == pytest.approx(schedule.value(3))


def test_save_and_load_keep_config_and_temperature(tmp_path):
    model = _gated_model(temperature=5.0, seed=3)
    model.get_layer("gate").temperature.assign(0.7)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    path = tmp_path / "gate.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    gate = loaded.get_layer("gate")
    assert isinstance(gate, GumbelSoftmax)
    assert gate.seed == 3 and gate.hard and gate.inference == "deterministic"
    assert float(keras.ops.convert_to_numpy(gate.temperature)) == pytest.approx(0.7)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)
