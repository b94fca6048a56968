"""FitNets: the hint term's value, what trains, and that only the student is saved."""

import keras
import numpy as np

from models.fitnets.hint_term import HintTerm, hint_loss
from models.strategies import StrategyOptions, get_strategy
from models.transfer_trainer import TransferTrainer
from tests.fixtures import images, labels, tiny_classifier


def _trainer(weight=1.0, stage=1):
    network, backbone = tiny_classifier()
    terms = get_strategy("fitnets").training_terms(network, StrategyOptions(extra={"hint_weight": weight, "hint_stage": stage}))
    trainer = TransferTrainer(network, terms)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return trainer, network, terms[0]


def test_hint_loss_is_half_the_mean_square():
    a = np.ones((2, 3, 3, 4), "float32")
    assert float(hint_loss(a, np.zeros_like(a))) == 0.5


def test_hint_term_equals_the_formula_on_the_student_and_teacher_features():
    trainer, network, term = _trainer(weight=2.0, stage=1)
    x = images()
    outputs = trainer(x, training=False)
    hint = term.teacher(x, training=False)[1]
    guided = term.regressor(outputs["features"]["block_01"])
    expected = 2.0 * 0.5 * np.mean((np.asarray(hint) - np.asarray(guided)) ** 2)
    np.testing.assert_allclose(float(term(outputs, images=x)), expected, rtol=1e-5)


def test_the_regressor_trains_the_teacher_does_not_and_only_the_student_is_saved(tmp_path):
    trainer, network, term = _trainer(stage=2)
    teacher_before = [np.array(w) for w in term.teacher.get_weights()]
    regressor_before = [np.array(w) for w in term.regressor.get_weights()]
    trainer.fit(images(8), labels(8), batch_size=4, epochs=1, verbose=0)
    assert "hint" in trainer.metrics_names or any(m.name == "hint" for m in trainer.metrics)
    for a, b in zip(teacher_before, term.teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(regressor_before, term.regressor.get_weights()))
    network.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.count_params() == network.count_params() == tiny_classifier()[0].count_params()
    assert not any("teacher" in layer.name or "regressor" in layer.name for layer in loaded.layers)


def test_the_hint_starts_at_zero_when_student_and_teacher_are_the_same_network():
    trainer, network, term = _trainer(stage=1)
    x = images()
    assert float(term(trainer(x, training=False), images=x)) < 1e-10
