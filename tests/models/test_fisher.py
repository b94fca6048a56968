"""The diagonal empirical Fisher: per-example squared gradients of log p(predicted label)."""

import keras
import numpy as np
import pytest

from models.regularizers.fisher import estimate_fisher, normalize_fisher
from models.regularizers.variables import keyed_variables, shared_variables
from tests.fixtures import images, tiny_classifier


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_fisher_of_a_linear_softmax_model_matches_the_closed_form():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype("float32")
    kernel, bias = (keras.ops.convert_to_numpy(v).astype(np.float64) for v in model.weights)
    p = softmax(x.astype(np.float64) @ kernel + bias)
    residual = np.eye(3)[p.argmax(axis=1)] - p  # d log p(y_hat | x) / d logits
    expected_kernel = np.mean((x[:, :, None] * residual[:, None, :]) ** 2, axis=0)
    expected_bias = np.mean(residual**2, axis=0)

    estimate = estimate_fisher(model, model.weights, [(x[:6], None), (x[6:], None)])
    assert estimate.examples == 10
    np.testing.assert_allclose(estimate.fisher[0], expected_kernel, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(estimate.fisher[1], expected_bias, rtol=1e-4, atol=1e-7)


def test_fisher_is_non_negative_and_shaped_like_the_weights():
    model, _ = tiny_classifier()
    variables = list(keyed_variables(shared_variables(model, "all")).values())
    estimate = estimate_fisher(model, variables, [images(3, seed=s) for s in range(3)], max_batches=2)
    assert estimate.examples == 6
    assert [f.shape for f in estimate.fisher] == [tuple(v.shape) for v in variables]
    assert all(np.all(f >= 0) and np.all(np.isfinite(f)) for f in estimate.fisher)
    assert sum(float(f.sum()) for f in estimate.fisher) > 0


def test_a_variable_the_model_does_not_use_gets_zero():
    model, _ = tiny_classifier()
    unused = keras.Variable(np.ones((2, 2), "float32"))
    estimate = estimate_fisher(model, [model.get_layer("classifier").kernel, unused], [images(2)])
    assert np.all(estimate.fisher[1] == 0) and estimate.fisher[0].sum() > 0


def test_normalized_fisher_has_mean_one():
    fisher = [np.array([1.0, 3.0], "float32"), np.array([[0.0, 4.0]], "float32")]
    normalized = normalize_fisher(fisher)
    assert np.mean(np.concatenate([f.ravel() for f in normalized])) == pytest.approx(1.0)
    np.testing.assert_allclose(normalized[0], [0.5, 1.5])
    assert all(np.all(f == 1) for f in normalize_fisher([np.zeros(3, "float32")]))


def test_no_examples_is_an_error():
    model, _ = tiny_classifier()
    with pytest.raises(ValueError, match="no examples"):
        estimate_fisher(model, model.trainable_variables[:1], [])
