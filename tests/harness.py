"""One test helper for every custom layer and loss term (after keras-hub's `run_layer_test`).

`run_layer_test` builds a layer from its constructor arguments, calls it eagerly and symbolically,
runs one `fit` step of a model around it, rebuilds it from `get_config` (the configs must agree),
and saves that model as `.keras` and loads it back with safe_mode on (the outputs must agree).
`run_term_test` does the same for a `TrainingTerm` inside a `TransferTrainer`.
"""

import keras
import numpy as np
import pytest

from models.transfer_trainer import TransferTrainer


def _numpy(tensors):
    if isinstance(tensors, (list, tuple)):
        return [np.asarray(keras.ops.convert_to_numpy(t)) for t in tensors]
    return np.asarray(keras.ops.convert_to_numpy(tensors))


def _inputs(shapes):
    if isinstance(shapes, list):
        return [keras.Input(shape=s[1:], batch_size=s[0]) for s in shapes]
    return keras.Input(shape=shapes[1:], batch_size=shapes[0])


def run_layer_test(cls, init_kwargs, inputs, tmp_path, expected_output_shape=None, training_deterministic=True):
    """Build, call, fit, get_config/from_config and .keras round trip of `cls(**init_kwargs)` on `inputs` (an array or a list).

    Returns the loaded model, for extra checks.
    """
    layer = cls(**init_kwargs)
    eager = layer(inputs)
    if expected_output_shape is not None:
        assert tuple(eager.shape) == tuple(expected_output_shape)
    shapes = [tuple(x.shape) for x in inputs] if isinstance(inputs, list) else tuple(inputs.shape)
    symbolic_inputs = _inputs(shapes)
    model = keras.Model(symbolic_inputs, layer(symbolic_inputs))
    eager_outputs = eager if isinstance(eager, (list, tuple)) else [eager]
    symbolic_outputs = model.outputs
    assert [tuple(t.shape[1:]) for t in symbolic_outputs] == [tuple(t.shape[1:]) for t in eager_outputs]

    # one fit step (mean squared error to zeros: gradients reach every trainable weight)
    before = [np.array(w) for w in _numpy(layer.trainable_weights)]
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    targets = [np.zeros(t.shape, "float32") for t in eager_outputs]
    batch = int(eager_outputs[0].shape[0])
    model.fit(inputs, targets if len(targets) > 1 else targets[0], batch_size=batch, epochs=1, verbose=0)
    after = _numpy(layer.trainable_weights)
    if before:
        assert any(not np.allclose(a, b) for a, b in zip(before, after)), f"{cls.__name__}: a fit step changed no weight"

    # get_config / from_config
    config = layer.get_config()
    rebuilt = cls.from_config(config)
    assert rebuilt.get_config() == config

    # .keras with safe_mode on
    path = str(tmp_path / f"{cls.__name__}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    if training_deterministic:
        np.testing.assert_allclose(_numpy(loaded(inputs, training=False)), _numpy(model(inputs, training=False)), rtol=1e-5, atol=1e-6)
    return loaded


def run_term_test(make_term, network, images, labels, tmp_path):
    """A `TrainingTerm` from `make_term(network)`: fit step, get_config/from_config + bind, .keras round trip of its trainer."""
    term = make_term(network)
    trainer = TransferTrainer(network, terms=[term], name="trainer")
    trainer.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = trainer.fit(images, labels, batch_size=len(images), epochs=1, verbose=0)
    assert term.name in history.history and np.isfinite(history.history[term.name][0])

    config = term.get_config()
    rebuilt = type(term).from_config(config)
    rebuilt.bind(network)
    assert rebuilt.get_config() == config

    def value(of_trainer, of_term):
        outputs = of_trainer(images, training=False)
        kwargs = {"images": images} if getattr(of_term, "needs_inputs", False) else {}
        return float(of_term(outputs, training=False, **kwargs))

    path = str(tmp_path / f"{type(term).__name__}_trainer.keras")
    trainer.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    original = value(trainer, term)
    assert original > 0
    assert value(loaded, loaded.terms[0]) == pytest.approx(original, rel=1e-5, abs=1e-7)
    return loaded
