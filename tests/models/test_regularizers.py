"""SP penalties (L2, L2-SP, L2-SP-Fisher, L1-SP, GL-SP, GL-SP-Fisher): values, w0, gradients, selection, resume."""

import math

import keras
import numpy as np
import pytest

from models.errors import ModelConfigError
from models.regularizers import DEFAULTS, REGULARIZERS, build_penalty_terms, check_regularizer
from models.regularizers.group_lasso_sp import GroupLassoSPPenalty
from models.regularizers.l1_sp import L1SPPenalty
from models.regularizers.l2_sp import L2SPPenalty
from models.regularizers.variables import distances_by_part, is_kernel, keyed_variables, new_variables, shared_variables
from models.regularizers.weight_decay import WeightDecayPenalty
from models.transfer_trainer import TransferTrainer
from tests.fixtures import images, labels, perturb, tiny_backbone, tiny_classifier


def numpy_of(variables):
    return [keras.ops.convert_to_numpy(v).astype(np.float64) for v in variables]


def value(term):
    return float(keras.ops.convert_to_numpy(term(None)))


def small_variables():
    """Two variables with known values: a conv-like kernel [1, 1, 2, 3] and a vector [3]."""
    kernel = keras.Variable(np.arange(6, dtype="float32").reshape(1, 1, 2, 3) / 10.0, name="kernel")
    vector = keras.Variable(np.array([0.5, -1.0, 2.0], "float32"), name="gamma")
    return [kernel, vector]


def test_sp_penalties_equal_the_hand_computed_values():
    variables = small_variables()
    w0 = numpy_of(variables)
    fisher = [np.full(w.shape, 2.0) + np.arange(w.size).reshape(w.shape) for w in w0]
    terms = {
        "l2sp": L2SPPenalty(variables, alpha=0.3),
        "l2sp_fisher": L2SPPenalty(variables, alpha=0.3, coefficients=fisher),
        "l1sp": L1SPPenalty(variables, alpha=0.3),
        "gl_sp": GroupLassoSPPenalty(variables, alpha=0.3),
        "gl_sp_fisher": GroupLassoSPPenalty(variables, alpha=0.3, fisher=fisher),
        "l2": WeightDecayPenalty(variables, weight=0.3),
    }
    shifts = [np.array([[[[0.1, -0.2, 0.0], [0.3, 0.0, -0.1]]]]), np.array([0.0, 0.4, -0.5])]
    for variable, start, shift in zip(variables, w0, shifts):
        variable.assign((start + shift).astype("float32"))
    w = numpy_of(variables)
    d = [a - b for a, b in zip(w, w0)]

    expected = {
        "l2sp": 0.3 * 0.5 * sum(np.sum(x**2) for x in d),
        "l2sp_fisher": 0.3 * 0.5 * sum(np.sum(f * x**2) for f, x in zip(fisher, d)),
        "l1sp": 0.3 * sum(np.sum(np.abs(x)) for x in d),
        # groups: the 3 output channels of the kernel (n_g = 2 each), the 3 entries of the vector (n_g = 1)
        "gl_sp": 0.3 * (np.sum(math.sqrt(2) * np.linalg.norm(d[0].reshape(2, 3), axis=0)) + np.sum(np.abs(d[1]))),
        # the authors' GL-SP-Fisher: sqrt(n_g) * sqrt(sum_{j in g} F_j d_j^2)
        "gl_sp_fisher": 0.3
        * (
            np.sum(math.sqrt(2) * np.sqrt((fisher[0] * d[0] ** 2).reshape(2, 3).sum(axis=0)))
            + np.sum(np.sqrt(fisher[1] * d[1] ** 2))
        ),
        "l2": 0.3 * 0.5 * sum(np.sum(x**2) for x in w),
    }
    for name, term in terms.items():
        assert value(term) == pytest.approx(expected[name], rel=1e-5, abs=1e-7), name


@pytest.mark.parametrize("name", ["l2sp", "l2sp_fisher", "l1sp", "gl_sp", "gl_sp_fisher"])
def test_sp_penalty_is_zero_at_w0_and_one_step_moves_the_weights_towards_w0(name):
    model, _ = tiny_classifier()
    shared = keyed_variables(shared_variables(model, "kernels"))
    fisher = {key: np.full(tuple(v.shape), 1.5, "float32") for key, v in shared.items()}
    term = build_penalty_terms(name, model, alpha=1.0, fisher=fisher)[0]
    assert value(term) == pytest.approx(0.0, abs=1e-9)

    w0 = numpy_of(shared.values())
    perturb(shared.values())
    before = math.sqrt(sum(np.sum((w - s) ** 2) for w, s in zip(numpy_of(shared.values()), w0)))
    assert value(term) > 0
    optimizer = keras.optimizers.SGD(learning_rate=0.05)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        penalty = term(None)
    variables = list(shared.values())
    optimizer.apply_gradients(zip(tape.gradient(penalty, variables), variables))
    after = math.sqrt(sum(np.sum((w - s) ** 2) for w, s in zip(numpy_of(shared.values()), w0)))
    assert after < before


def test_l2_pulls_towards_zero_and_new_weights_term_covers_the_classifier():
    model, _ = tiny_classifier()
    terms = build_penalty_terms("l2", model)
    assert [t.name for t in terms] == ["l2", "l2_new"]
    assert terms[0].weight == DEFAULTS["l2"].alpha and terms[1].weight == DEFAULTS["l2"].beta
    new = terms[1].penalized_variables()
    assert [v.path for v in new] == ["classifier/kernel"]  # kernels only by default: no bias
    expected = DEFAULTS["l2"].beta / 2 * np.sum(keras.ops.convert_to_numpy(new[0]) ** 2)
    assert value(terms[1]) == pytest.approx(expected, rel=1e-5)


def test_kernels_selection_leaves_out_batchnorm_and_biases():
    model, _ = tiny_classifier()
    kernels = shared_variables(model, "kernels")
    everything = shared_variables(model, "all")
    assert kernels and all(is_kernel(v) for _, v in kernels)
    assert {v.name for _, v in everything} >= {"kernel", "gamma", "beta"}
    assert not any(v.name in ("moving_mean", "moving_variance") for _, v in everything)  # not trainable
    assert {part for part, _ in everything} == {"stem", "block_01", "block_02", "block_03"}
    assert [part for part, _ in new_variables(model, "all")] == ["classifier", "classifier"]


def test_frozen_layers_are_not_penalised():
    model, _ = tiny_classifier()
    model.get_layer("block_01").trainable = False
    model.get_layer("stem").trainable = False
    assert {part for part, _ in shared_variables(model)} == {"block_02", "block_03"}


def test_under_spottune_the_penalty_ties_the_finetuned_copies_and_leaves_the_policy_alone():
    from models.spottune.classifier import build_spottune_classifier
    from models.strategies import get_strategy

    backbone = tiny_backbone()
    model = build_spottune_classifier(backbone, 3, normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, policy_widths=(4, 8, 8))
    shared = shared_variables(model, "kernels")
    paths = [v.path for _, v in shared]
    assert any("block_01_finetuned" in p for p in paths)
    assert not any("pretrained" in p for p in paths)
    own = get_strategy("spottune").own_parts
    assert {part for part, _ in new_variables(model)} == {"classifier", "policy"}
    assert {part for part, _ in new_variables(model, exclude=own)} == {"classifier"}  # the policy has its own weight decay
    term = build_penalty_terms("l2sp", model, exclude_parts=own)[0]
    assert value(term) == pytest.approx(0.0, abs=1e-9)
    # w0 of the fine-tuned copy equals the frozen pretrained copy's weights
    block = model.get_layer("block_01")
    for start, pretrained in zip(
        [s for s, v in zip(term.starts, term.penalized_variables()) if "block_01_finetuned" in v.path],
        [w for w in block.pretrained.weights if w.name == "kernel"],
    ):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(start), keras.ops.convert_to_numpy(pretrained))


def test_every_regularizer_builds_for_every_baseline_strategy():
    from models.strategies import StrategyOptions, get_strategy

    for strategy_name, k in (("finetune", None), ("linear", None), ("last_k", 1)):
        backbone = tiny_backbone()
        model = get_strategy(strategy_name).build(backbone, 3, {"mean": [0.5] * 3, "std": [0.25] * 3}, StrategyOptions(k=k))
        shared = keyed_variables(shared_variables(model, "kernels"))
        fisher = {key: np.ones(tuple(v.shape), "float32") for key, v in shared.items()}
        for name in ("l2", "l2sp", "l2sp_fisher", "l1sp", "gl_sp", "gl_sp_fisher"):
            terms = build_penalty_terms(name, model, fisher=fisher)
            assert len(terms) == 2 and all(value(t) >= 0 for t in terms)
        if strategy_name == "linear":
            assert not shared


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: check_regularizer("l3sp"), "unknown regularizer 'l3sp'"),
        (lambda: check_regularizer("l2sp", alpha=-0.1), "--alpha must be a number >= 0"),
        (lambda: check_regularizer("l2sp", beta=float("nan")), "--beta must be a number >= 0"),
        (lambda: check_regularizer("none", alpha=0.1), "no meaning with --regularizer none"),
        (lambda: check_regularizer("l2sp", penalize="biases"), "unknown --penalize"),
    ],
)
def test_bad_settings_are_one_line_errors(call, words):
    with pytest.raises(ModelConfigError) as error:
        call()
    assert words in str(error.value) and "\n" not in str(error.value)


def test_registry_lists_every_regularizer_with_defaults():
    assert set(REGULARIZERS) == {"none", "l2", "l2sp", "l2sp_fisher", "l1sp", "gl_sp", "gl_sp_fisher", "delta"}
    assert (DEFAULTS["l2sp"].alpha, DEFAULTS["l2sp"].beta) == (0.1, 0.01)
    assert (DEFAULTS["delta"].alpha, DEFAULTS["delta"].beta) == (0.01, 0.01)
    assert build_penalty_terms("none", tiny_classifier()[0]) == []


def test_fisher_regularizer_without_fisher_is_a_one_line_error():
    with pytest.raises(ModelConfigError, match="needs the Fisher information"):
        build_penalty_terms("l2sp_fisher", tiny_classifier()[0])


def _trainer(model, seed_terms=None):
    terms = seed_terms if seed_terms is not None else build_penalty_terms("l2sp", model, alpha=0.1)
    trainer = TransferTrainer(model, terms=terms)
    trainer.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return trainer


def test_terms_are_logged_and_a_restored_checkpoint_keeps_w0(tmp_path):
    model, _ = tiny_classifier(seed=0)
    trainer = _trainer(model)
    w0 = [keras.ops.convert_to_numpy(s) for s in trainer.terms[0].starts]
    history = trainer.fit(images(8), labels(8), batch_size=4, epochs=1, verbose=0)
    assert {"l2sp", "l2_new", "loss"} <= set(history.history)
    path = str(tmp_path / "trainer.weights.h5")
    trainer.save_weights(path)  # what BackupAndRestore saves

    # A "resumed" process: a network whose weights differ (so a fresh snapshot would differ) ...
    other, _ = tiny_classifier(seed=5)
    resumed = _trainer(other)
    assert not np.allclose(keras.ops.convert_to_numpy(resumed.terms[0].starts[0]), w0[0])
    resumed.load_weights(path)  # ... gets w0 back from the checkpoint
    for start, expected in zip(resumed.terms[0].starts, w0):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(start), expected)
    # the term does not own the network's variables: the checkpoint holds them once
    assert len(trainer.terms[0].weights) == len(w0)
    assert not trainer.terms[0].trainable_weights


def test_backup_and_restore_resumes_with_the_original_w0(tmp_path):
    class StopAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                raise KeyboardInterrupt

    model, _ = tiny_classifier(seed=0)
    trainer = _trainer(model)
    w0 = [keras.ops.convert_to_numpy(s) for s in trainer.terms[0].starts]
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq="epoch", delete_checkpoint=False)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(images(8), labels(8), batch_size=4, epochs=3, verbose=0, callbacks=[backup, StopAfterFirstEpoch()])

    other, _ = tiny_classifier(seed=7)
    resumed = _trainer(other)
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), save_freq="epoch", delete_checkpoint=False)
    history = resumed.fit(images(8), labels(8), batch_size=4, epochs=3, verbose=0, callbacks=[backup])
    assert history.epoch == [1, 2]
    for start, expected in zip(resumed.terms[0].starts, w0):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(start), expected)


def test_distances_by_part():
    starts = {"stem|a": np.zeros(3), "block_01|b": np.ones(4), "block_01|c": np.ones(1)}
    current = {"stem|a": np.array([3.0, 4.0, 0.0]), "block_01|b": np.ones(4), "block_01|c": np.array([2.0])}
    table = distances_by_part(current, starts)
    assert list(table) == ["stem", "block_01"]
    assert table["stem"]["distance"] == pytest.approx(5.0) and math.isnan(table["stem"]["relative"])
    assert table["block_01"]["distance"] == pytest.approx(1.0)
    assert table["block_01"]["relative"] == pytest.approx(1 / math.sqrt(5))
    assert table["block_01"]["parameters"] == 5


def authors_gl_sp_fisher(weights, starts, fisher, alpha):
    """The L2-SP authors' TF code (mode 7), in NumPy: value and gradient of
    `alpha * sum_g sqrt(n_g) * sqrt(sum_{j in g} F_j (w_j - w0_j)^2 + 1e-16)`, groups = output channels."""
    total, gradients = 0.0, []
    for w, w0, f in zip(weights, starts, fisher):
        d = (w - w0).astype(np.float64)
        f = f.astype(np.float64)
        out = d.shape[-1]
        n_g = d.size // out
        norms = np.sqrt((f * d**2).reshape(-1, out).sum(axis=0) + 1e-16)
        total += alpha * np.sum(math.sqrt(n_g) * norms)
        gradients.append(alpha * math.sqrt(n_g) * f * d / norms)
    return total, gradients


def test_gl_sp_fisher_has_the_authors_value_and_gradient_on_a_tiny_network():
    import tensorflow as tf

    model, _ = tiny_classifier()
    variables = [v for _, v in shared_variables(model, "kernels")]
    w0 = numpy_of(variables)
    rng = np.random.default_rng(3)
    fisher = [rng.uniform(0.0, 3.0, w.shape).astype("float32") for w in w0]
    term = GroupLassoSPPenalty(variables, alpha=0.7, fisher=fisher)
    for variable, start in zip(variables, w0):
        variable.assign((start + rng.normal(scale=0.05, size=start.shape)).astype("float32"))
    expected, expected_gradients = authors_gl_sp_fisher(numpy_of(variables), w0, fisher, 0.7)
    with tf.GradientTape() as tape:
        penalty = term(None)
    gradients = tape.gradient(penalty, variables)
    assert float(penalty) == pytest.approx(expected, rel=1e-5)
    for got, want in zip(gradients, expected_gradients):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-6)
    # The former reading, sqrt(sum_g F_j) * ||d_g||, has another gradient: the test above tells them apart.
    d = [w - s for w, s in zip(numpy_of(variables), w0)]
    former = [np.sqrt(f.reshape(-1, f.shape[-1]).sum(0)) * x / np.linalg.norm(x.reshape(-1, x.shape[-1]), axis=0) for f, x in zip(fisher, d)]
    assert not all(np.allclose(a, 0.7 * b, rtol=1e-2) for a, b in zip(expected_gradients, former))
