"""The "stem_features" SpotTune policy (issue 14): it reads the stem's output, trains through the
strategy, saves and loads, routes per image, and its exported conditional graph matches Keras."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.errors import ModelConfigError
from models.spottune.classifier import routed_blocks, routing_model
from models.spottune.policy_network import PolicyNetwork
from models.spottune.stem_policy import StemFeaturePolicy, stem_policy_multiply_adds
from tests.fixtures import NORMALIZATION, images, perturb, tiny_backbone, tiny_spottune
from tests.export.helpers import assert_close, keras_logits, varied_images


def mixed_stem_policy(model, x, scale=3.0, seed=0):
    """Makes the policy's decisions depend strongly on the image; returns the decisions on `x`."""
    dense = model.get_layer("policy").dense
    rng = np.random.default_rng(seed)
    dense.kernel.assign(rng.normal(scale=scale, size=dense.kernel.shape).astype("float32"))
    dense.bias.assign(np.zeros(dense.bias.shape, "float32"))
    # Centre each logit on its median over `x`: about half the images choose each copy of a block.
    logits = keras.ops.convert_to_numpy(model.get_layer("policy")(model.get_layer("stem")(model.get_layer("normalization")(x.astype("float32")))))
    dense.bias.assign(-np.median(logits, axis=0).reshape(-1).astype("float32") + rng.normal(scale=1e-3, size=dense.bias.shape).astype("float32"))
    return keras.ops.convert_to_numpy(routing_model(model)(x.astype("float32"), training=False)["decisions"])


def test_the_policy_reads_the_stem_output_and_costs_what_its_formula_says():
    from bench.routed_latency import macs

    model = tiny_spottune("stem_features")
    policy = model.get_layer("policy")
    assert isinstance(policy, StemFeaturePolicy) and policy.widths == (4, 8, 8)
    # Its input is the stem's output tensor, not the normalised image.
    assert policy.input is model.get_layer("stem").output
    assert tuple(model(images(), training=True).shape) == (4, 5)
    assert tuple(routing_model(model)(images(), training=False)["decisions"].shape) == (4, 3)
    # 9 C_{i-1} C_i H_i W_i per strided conv + C_n 2L, against the bench's count of the layer's calls.
    assert macs(policy, (1, 10, 10, 4)) == stem_policy_multiply_adds(10, 10, 4, (4, 8, 8), 3) == 9 * (4 * 4 * 25 + 4 * 8 * 9 + 8 * 8 * 4) + 8 * 6
    # The default widths on ResNet-20 at 32 px (stem output 32 x 32 x 16): 1.2 M, as documented.
    assert stem_policy_multiply_adds(32, 32, 16, num_blocks=9) == 9 * (16 * 16 * 256 + 16 * 32 * 64 + 32 * 64 * 16) + 64 * 18


def test_strategy_default_stays_the_authors_policy_and_bad_combinations_fail_in_one_line():
    from models.strategies import StrategyOptions, get_strategy

    spottune = get_strategy("spottune")
    assert isinstance(spottune.build(tiny_backbone(), 5, NORMALIZATION, StrategyOptions()).get_layer("policy"), PolicyNetwork)
    built = spottune.build(tiny_backbone(), 5, NORMALIZATION, StrategyOptions(extra={"policy": "stem_features"}))
    assert isinstance(built.get_layer("policy"), StemFeaturePolicy)
    with pytest.raises(ModelConfigError, match="--policy"):
        spottune.check(StrategyOptions(extra={"policy": "resnet"}), 3)
    with pytest.raises(ModelConfigError, match="only applies to strategy spottune"):
        get_strategy("spottune_global").check(StrategyOptions(extra={"policy": "stem_features"}), 3)
    with pytest.raises(ModelConfigError, match="policy-image-size"):
        tiny_spottune("stem_features", policy_image_size=8)
    with pytest.raises(ModelConfigError, match="policy-image-size"):
        spottune.check(StrategyOptions(extra={"policy": "stem_features", "policy_image_size": 16}), 3)
    spottune.check(StrategyOptions(extra={"policy_image_size": 16}), 3)  # the authors' policy takes it


def test_a_training_step_trains_the_policy_with_its_own_optimizer_and_no_gradient_reaches_the_stem_through_it():
    from models.strategies import StrategyOptions, get_strategy

    model = tiny_spottune("stem_features")
    policy, stem = model.get_layer("policy"), model.get_layer("stem")
    x = images(4, 8)
    with tf.GradientTape() as tape:
        logits = policy(stem(model.get_layer("normalization")(x), training=True), training=True)
        loss = tf.reduce_sum(logits**2)
    gradients = tape.gradient(loss, stem.trainable_variables + policy.trainable_variables)
    assert all(g is None for g in gradients[: len(stem.trainable_variables)])  # detached input
    assert all(g is not None and float(tf.reduce_max(tf.abs(g))) > 0 for g in gradients[len(stem.trainable_variables) :])

    # One step through the strategy (its SplitOptimizer gives the policy its own SGD): both move.
    spottune = get_strategy("spottune")
    options = StrategyOptions(extra={"policy": "stem_features"})
    model = spottune.build(tiny_backbone(), 5, NORMALIZATION, options)
    model.compile(
        optimizer=spottune.optimizer(model, keras.optimizers.SGD(0.1), options),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = [(v, keras.ops.convert_to_numpy(v)) for v in model.trainable_variables]
    labels = np.arange(8) % 5
    model.fit(images(8, 8), labels, batch_size=8, epochs=1, verbose=0)
    moved = {v.path for v, value in before if not np.array_equal(value, keras.ops.convert_to_numpy(v))}
    assert any(path.startswith("policy/") for path in moved), sorted(moved)
    assert any(path.startswith("stem/") for path in moved), sorted(moved)


def test_save_and_load_with_safe_mode_give_the_same_outputs_and_routing(tmp_path):
    model = tiny_spottune("stem_features")
    for block in routed_blocks(model):
        perturb(block.finetuned, scale=0.2, seed=0)
    x = varied_images(6, 10).astype("float32")
    decisions = mixed_stem_policy(model, x)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(tmp_path / "stem.keras")
    loaded = keras.saving.load_model(tmp_path / "stem.keras", safe_mode=True)
    assert isinstance(loaded.get_layer("policy"), StemFeaturePolicy)
    assert loaded.get_layer("policy").get_config() == model.get_layer("policy").get_config()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(routing_model(loaded)(x)["decisions"]), decisions)


def test_decisions_are_per_image_and_each_image_gets_the_copies_it_chose():
    model = tiny_spottune("stem_features")
    for block in routed_blocks(model):
        perturb(block.finetuned, scale=0.2, seed=0)
    x = varied_images(8, 8).astype("float32")
    decisions = mixed_stem_policy(model, x)
    assert 0 < decisions.mean() < 1 and (decisions.min(0) != decisions.max(0)).any(), "images must take different paths"
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    for i in range(len(x)):  # one image alone, its decisions forced: the same logits
        h = model.get_layer("stem")(model.get_layer("normalization")(x[i : i + 1]), training=False)
        for index, block in enumerate(routed_blocks(model)):
            h = block.finetuned(h, training=False) if decisions[i, index] else block.pretrained(h, training=False)
        alone = model.get_layer("classifier")(model.get_layer("head")(h, training=False))
        np.testing.assert_allclose(keras.ops.convert_to_numpy(alone)[0], logits[i], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_the_exported_conditional_graph_matches_the_keras_model(tmp_path):
    import onnx

    from export import graph, onnx_export, tflite
    from export.verify import OnnxRunner, TFLiteRunner, run_all

    model = tiny_spottune("stem_features")
    for block in routed_blocks(model):
        perturb(block.finetuned, scale=0.2, seed=0)
    x = varied_images(8, 8)
    decisions = mixed_stem_policy(model, x)
    assert (decisions.min(0) != decisions.max(0)).any()
    function, control_flow = graph.serving_function(model)
    assert control_flow
    saved = graph.write_saved_model(model, function, str(tmp_path / "saved_model"), 8)
    tflite_bytes = tflite.convert(saved, "none")
    (tmp_path / "model.tflite").write_bytes(tflite_bytes)
    onnx_export.convert_tflite(tflite_bytes, str(tmp_path / "model.onnx"))
    expected = keras_logits(model, x)
    runner = TFLiteRunner(str(tmp_path / "model.tflite"))
    assert "IF" in {op["op_name"] for op in runner.interpreter._get_ops_details()}
    assert_close(run_all(runner, x), expected)  # one image at a time: one copy per block
    assert "If" in {node.op_type for node in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert_close(run_all(OnnxRunner(str(tmp_path / "model.onnx")), x), expected)


@pytest.mark.slow
def test_train_and_export_a_stem_features_run_from_the_command_line(tmp_path):
    from tests.app.helpers import FAST_TRAIN, read_json, run_cli

    run = tmp_path / "run"
    run_cli("app.train", "--strategy", "spottune", "--policy", "stem_features", "--epochs", "1", "--out", run, *FAST_TRAIN)
    assert read_json(run / "config.json")["extra"]["policy"] == "stem_features"
    from models import registry

    registry.import_all_layers()
    assert isinstance(keras.saving.load_model(run / "model.keras", safe_mode=True).get_layer("policy"), StemFeaturePolicy)
    run_cli("app.export", "--run", run, "--format", "tflite", "--max-images", "32", "--quiet")
    report = read_json(run / "export_report.json")
    assert report["exported"]["kind"] == "routed"
    for row in report["files"]:
        assert row["status"] == "ok" and row["routing"] == "conditional" and row["agreement"] == 1.0, row
    failed = run_cli("app.train", "--strategy", "spottune_global", "--policy", "stem_features", "--out", tmp_path / "bad", *FAST_TRAIN, check=False)
    assert failed.returncode != 0 and "only applies to strategy spottune" in failed.stderr
