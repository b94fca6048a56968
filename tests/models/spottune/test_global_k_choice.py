"""Global-k's block choice and compact phase: the Gumbel top-k gate (exactly k blocks on every step) and
the compact network trained on its k chosen blocks only (docs/methods/global_k.md)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.spottune.classifier import routed_blocks, routing_model
from models.spottune.compact import chosen_blocks, compact_classifier, fixed_decisions, freeze_to_blocks
from models.spottune.gumbel_softmax import TopKGumbelGate
from models.strategies import RunContext, StrategyOptions, get_strategy
from tests.fixtures import NORMALIZATION, images, labels, perturb, tiny_backbone, tiny_spottune


def _logits(batch=16, blocks=5, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, blocks, 2)).astype("float32")


@pytest.mark.parametrize("k", [0, 1, 2, 5])
def test_top_k_gate_routes_exactly_k_blocks_of_every_image_in_training(k):
    gate = TopKGumbelGate(k, seed=0)
    routing = keras.ops.convert_to_numpy(gate(_logits(), training=True))
    assert routing.shape == (16, 5, 2)
    assert set(np.unique(routing)) <= {0.0, 1.0}
    np.testing.assert_array_equal(routing.sum(axis=-1), 1.0)  # one copy per block
    np.testing.assert_array_equal(routing[..., 1].sum(axis=-1), k)  # k fine-tuned copies per image


def test_top_k_gate_samples_differ_per_image_and_follow_the_margins():
    logits = np.zeros((512, 4, 2), "float32")
    logits[:, :, 1] = [3.0, 0.0, 0.0, -3.0]  # block 0 nearly always in the top 2, block 3 nearly never
    fraction = keras.ops.convert_to_numpy(TopKGumbelGate(2, seed=1)(logits, training=True))[..., 1].mean(axis=0)
    assert fraction[0] > 0.9 and fraction[3] < 0.1 and 0.3 < fraction[1] < 0.7 and 0.3 < fraction[2] < 0.7


def test_top_k_gate_at_inference_is_the_top_k_of_the_margins_as_fixed_decisions_takes_them():
    gate = TopKGumbelGate(2, seed=0)
    logits = np.array([[0.0, 1.0], [0.5, 0.5], [0.0, 2.0], [1.0, 2.0]], "float32")  # margins 1, 0, 2, 1
    routing = keras.ops.convert_to_numpy(gate(np.stack([logits] * 3), training=False))
    np.testing.assert_array_equal(routing[..., 1], [[1, 0, 1, 0]] * 3)  # block 2, then the tie of 0 and 3 to the earlier
    ties = keras.ops.convert_to_numpy(gate(np.zeros((1, 4, 2), "float32"), training=False))
    np.testing.assert_array_equal(ties[0, :, 1], [1, 1, 0, 0])


def test_top_k_gate_gradient_raises_the_margin_of_a_block_whose_fine_tuned_copy_lowers_the_loss():
    gate = TopKGumbelGate(2, temperature=1.0, seed=0)
    logits = tf.Variable(np.zeros((8, 4, 2), "float32"))
    benefit = tf.constant([-1.0, 0.0, 0.0, 1.0])  # loss falls when block 0 is fine-tuned, rises for block 3
    with tf.GradientTape() as tape:
        routing = gate(logits, training=True)
        loss = tf.reduce_sum(routing[..., 1] * benefit)
    gradient = tape.gradient(loss, logits).numpy()
    margin_gradient = (gradient[..., 1] - gradient[..., 0]).sum(axis=0)
    assert margin_gradient[0] < 0 < margin_gradient[3]  # gradient descent raises block 0's margin, lowers block 3's


def _top_k_model(k=1, seed=0):
    model = tiny_spottune("global", top_k=k, global_k={"target_k": k, "count_weight": 0.0, "binarize_weight": 0.0})
    for index, block in enumerate(routed_blocks(model)):
        perturb(block.finetuned, scale=0.2, seed=seed + index)
    model.get_layer("policy").logits.assign(np.array([[0.0, -1.0], [0.0, 0.5], [0.0, 0.2]], "float32"))
    return model


def test_a_top_k_model_compacts_to_exactly_its_routed_network_and_survives_saving(tmp_path):
    model = _top_k_model(k=2)
    assert fixed_decisions(model) == [0, 1, 1]  # margins -1, 0.5, 0.2: the top 2
    assert chosen_blocks(model, 2) == ([0, 1, 1], False)
    model.get_layer("policy").logits.assign(np.array([[0.0, -1.0], [0.0, -0.5], [0.0, 0.2]], "float32"))
    assert fixed_decisions(model) == [0, 1, 1]  # a top-k gate's deterministic path, not the sign of the margins
    assert chosen_blocks(model, 2) == ([0, 1, 1], False)
    x = images(4, 8)
    compact = compact_classifier(model)
    np.testing.assert_allclose(compact(x, training=False), model(x, training=False), atol=1e-5)
    ties = _top_k_model(k=2)
    ties.get_layer("policy").logits.assign(np.zeros((3, 2), "float32"))
    assert fixed_decisions(ties) == [1, 1, 0]  # ties to the earlier block, in the gate and in the compact choice
    np.testing.assert_allclose(compact_classifier(ties)(x, training=False), ties(x, training=False), atol=1e-5)
    decisions = keras.ops.convert_to_numpy(routing_model(model)(x, training=True)["decisions"])
    np.testing.assert_array_equal(decisions.sum(axis=-1), 2)
    model.save(tmp_path / "routed.keras")
    loaded = keras.saving.load_model(tmp_path / "routed.keras", safe_mode=True)
    assert isinstance(loaded.get_layer("gate"), TopKGumbelGate) and loaded.get_layer("gate").top_k == 2
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-5)


def _weights(layer):
    return [np.array(w) for w in layer.get_weights()]  # trainable and BatchNorm statistics


@pytest.mark.parametrize("bn", ["train", "frozen"])
def test_the_compact_phase_trains_only_the_chosen_blocks_the_head_and_the_classifier(bn):
    model = _top_k_model(k=1)
    compact = compact_classifier(model, decisions=[0, 1, 0])
    names = freeze_to_blocks(compact, [0, 1, 0], bn)
    assert names == ["block_02", "head", "classifier"]
    assert [layer.name for layer in compact.layers if layer.trainable_weights] == ["block_02", "classifier"]  # GAP head: no weights
    before = {layer.name: _weights(layer) for layer in compact.layers}
    compact.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    compact.fit(images(8, 8), labels(8) % 5, epochs=2, batch_size=4, verbose=0)
    for name in ("normalization", "stem", "block_01", "block_03"):
        for a, b in zip(before[name], _weights(compact.get_layer(name))):
            np.testing.assert_array_equal(a, b, err_msg=name)
    kernel = compact.get_layer("block_02").trainable_weights[0]
    assert not np.allclose(before["block_02"][0], keras.ops.convert_to_numpy(kernel))
    assert not np.allclose(before["classifier"][0], _weights(compact.get_layer("classifier"))[0])
    before_statistics = [w for w, v in zip(before["block_02"], compact.get_layer("block_02").weights) if "moving" in v.path]
    after_statistics = [keras.ops.convert_to_numpy(v) for v in compact.get_layer("block_02").weights if "moving" in v.path]
    changed = any(not np.allclose(a, b) for a, b in zip(before_statistics, after_statistics))
    assert changed == (bn == "train")  # BatchNorm statistics of the trained block update only with --bn train


class _Batches:
    """`RunContext.batches` over one small in-memory split."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __call__(self, split, training=False):
        return tf.data.Dataset.from_tensor_slices((self.x, self.y)).batch(4)


def _context(network, tmp_path, fit_calls, extra):
    x, y = images(8, 8), labels(8) % 5
    batches = _Batches(x, y)

    def evaluate(model, splits):
        logits = model.predict(x, verbose=0)
        return {split: float(np.mean(np.argmax(logits, -1) == y)) for split in splits}

    def fit(model, epochs):
        fit_calls.append((model, epochs))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model.fit(x, y, epochs=epochs, batch_size=4, verbose=0)

    return RunContext(
        network=network,
        options=StrategyOptions(k=1, extra=extra),
        batches=batches,
        class_names=[f"c{i}" for i in range(5)],
        path=lambda name: str(tmp_path / name),
        evaluate=evaluate,
        splits=["test"],
        fit=fit,
    )


def test_global_k_after_fit_hands_back_the_trained_compact_network_and_finish_reports_both(tmp_path):
    strategy = get_strategy("global_k")
    extra = {"block_choice": "top_k", "compact_epochs": 2, "seed": 0}
    options = StrategyOptions(k=1, extra=extra)
    routed = strategy.build(tiny_backbone(), 5, NORMALIZATION, options)
    assert isinstance(routed.get_layer("gate"), TopKGumbelGate) and routed.get_layer("gate").top_k == 1
    assert routed.get_layer("global_k").count_weight == 0.0 and routed.get_layer("global_k").binarize_weight == 0.0
    routed.get_layer("policy").logits.assign(np.array([[0.0, -1.0], [0.0, 0.5], [0.0, 0.2]], "float32"))
    calls = []
    context = _context(routed, tmp_path, calls, extra)
    strategy.before_fit(context)
    strategy.after_fit(context)
    compact = context.network
    assert compact is not routed and calls == [(compact, 2)]
    assert [layer.name for layer in compact.layers if layer.trainable_weights] == ["block_02", "classifier"]
    pretrained = routed_blocks(routed)
    for index in (0, 2):  # the blocks not chosen: the pretrained copies, untouched
        for a, b in zip(_weights(compact.get_layer(f"block_{index + 1:02d}")), _weights(pretrained[index].pretrained)):
            np.testing.assert_array_equal(a, b)
    for a, b in zip(_weights(compact.get_layer("stem")), _weights(routed.get_layer("stem"))):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(_weights(compact.get_layer("block_02"))[0], _weights(pretrained[1].finetuned)[0])  # trained on

    context.accuracy = context.evaluate(compact, context.splits)
    metrics = strategy.finish(context)
    routing = metrics["routing"]
    assert routing["decisions"] == [0, 1, 0] and routing["finetuned_blocks"] == [1] and not routing["forced_top_k"]
    assert routing["compact_accuracy"] == context.accuracy
    assert routing["routed_accuracy"] == context.evaluate(routed, ["test"])
    assert set(routing["compact_cut_accuracy"]) == {"test"} and routing["compact_epochs"] == 2
    assert routing["compact_trainable_layers"] == ["block_02", "head", "classifier"]
    assert len(routing["compact_history"]["loss"]) == 2
    assert len(routing["fraction_finetuned"]) == 3  # the routing report still describes the routed network
    saved = keras.saving.load_model(tmp_path / "compact.keras", safe_mode=True)
    np.testing.assert_allclose(saved.predict(images(4, 8), verbose=0), compact.predict(images(4, 8), verbose=0), atol=1e-5)
    assert (tmp_path / "routed.keras").is_file()


def test_without_compact_epochs_global_k_keeps_its_routed_network(tmp_path):
    strategy = get_strategy("global_k")
    extra = {"seed": 0}
    routed = strategy.build(tiny_backbone(), 5, NORMALIZATION, StrategyOptions(k=1, extra=extra))
    assert not isinstance(routed.get_layer("gate"), TopKGumbelGate)  # the paper's formulation by default
    assert routed.get_layer("global_k").count_weight == 10.0
    calls = []
    context = _context(routed, tmp_path, calls, extra)
    strategy.before_fit(context)
    strategy.after_fit(context)
    assert context.network is routed and calls == []
    context.accuracy = context.evaluate(routed, context.splits)
    routing = strategy.finish(context)["routing"]
    assert "routed_accuracy" not in routing and (tmp_path / "compact.keras").is_file()
    assert not (tmp_path / "routed.keras").exists()


def test_top_k_needs_a_global_policy():
    from models.errors import ModelConfigError

    with pytest.raises(ModelConfigError, match="top_k"):
        tiny_spottune("per_image", top_k=1)
    with pytest.raises(ModelConfigError, match="top_k"):
        tiny_spottune("global", top_k=4)
