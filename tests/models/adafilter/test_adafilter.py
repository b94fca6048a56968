"""AdaFilter (models/adafilter/): the hard gate, the gated convolution, the whole network against the
pretrained network and its fine-tuned copy, saving with safe_mode, the usage statistics.

Method page: docs/methods/adafilter.md.
"""

import keras
import numpy as np
import pytest

from models.adafilter.binary_gate import BinaryGate
from models.adafilter.classifier import build_adafilter_classifier, force_gates, gate_layers, gated_layers
from models.adafilter.filter_usage import filter_usage
from models.adafilter.gate_network import RecurrentGateCell
from models.adafilter.gated_conv import GatedConv
from models.classifier import assemble_classifier
from tests import fixtures as fx
from tests.harness import run_layer_test


def _adafilter(functional_blocks=False, bn="train"):
    backbone = fx.tiny_backbone(functional_blocks=functional_blocks)
    return build_adafilter_classifier(backbone, fx.NUM_CLASSES, fx.NORMALIZATION, bn=bn, hidden=6, embedding=5), backbone


def _plain(backbone, adafilter):
    plain = assemble_classifier(backbone, fx.NUM_CLASSES, normalization=fx.NORMALIZATION)
    plain.get_layer("classifier").set_weights(adafilter.get_layer("classifier").get_weights())
    return plain


def _source_layer(backbone, path):
    block_name, layer_name = path.split("/")
    block = next(b for b in backbone.blocks if b.name == block_name)
    return block.get_layer(layer_name) if isinstance(block, keras.Model) else getattr(block, layer_name)


def test_gate_is_binary_in_the_forward_pass_and_passes_the_sigmoid_gradient():
    import tensorflow as tf

    logits = tf.constant(np.random.default_rng(0).normal(scale=3, size=(16, 32)).astype("float32"))
    gate = BinaryGate()
    with tf.GradientTape() as tape:
        tape.watch(logits)
        values = gate(logits, training=True)
        loss = tf.reduce_sum(values * tf.range(32, dtype=tf.float32))
    values = values.numpy()
    assert set(np.unique(values)) <= {0.0, 1.0} and 0 < values.mean() < 1
    np.testing.assert_array_equal(values, (logits.numpy() >= 0).astype("float32"))
    np.testing.assert_array_equal(gate(logits, training=False).numpy(), values)
    sigmoid = 1 / (1 + np.exp(-logits.numpy()))
    expected = sigmoid * (1 - sigmoid) * np.arange(32, dtype="float32")
    np.testing.assert_allclose(tape.gradient(loss, logits).numpy(), expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("functional_blocks", [False, True])
def test_all_gates_pretrained_is_the_pretrained_network(functional_blocks):
    model, backbone = _adafilter(functional_blocks)
    fx.perturb([v for layer in gated_layers(model) for v in layer.finetuned_conv.weights])  # the copies move
    images = fx.images()
    plain = _plain(backbone, model)
    force_gates(model, 0)
    np.testing.assert_allclose(model(images, training=False), plain(images, training=False), rtol=1e-5, atol=1e-6)
    force_gates(model, 1)
    assert not np.allclose(model(images, training=False), plain(images, training=False), atol=1e-4)


@pytest.mark.parametrize("functional_blocks", [False, True])
def test_all_gates_finetuned_is_the_finetuned_copy(functional_blocks):
    model, backbone = _adafilter(functional_blocks)
    # the "fine-tuned" weights: the backbone's, perturbed, written into both the backbone and the copies
    for layer in gated_layers(model):
        conv = _source_layer(backbone, layer.source)
        fx.perturb(conv.weights, seed=len(layer.source))
        layer.finetuned_conv.set_weights(conv.get_weights())
    images = fx.images()
    force_gates(model, 1)
    np.testing.assert_allclose(model(images, training=False), _plain(backbone, model)(images, training=False), rtol=1e-5, atol=1e-5)


def test_learned_gates_mix_filters_per_image_and_the_model_saves_with_safe_mode(tmp_path):
    model, _ = _adafilter()
    fx.perturb([v for layer in gated_layers(model) for v in layer.finetuned_conv.weights])
    for gate_out in [layer for layer in model.layers if layer.name.startswith("adafilter_out_")]:
        fx.perturb(gate_out.weights, scale=1.0)
    images = fx.images(batch=6)
    path = str(tmp_path / "adafilter.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded(images, training=False), model(images, training=False), rtol=1e-5, atol=1e-6)
    statistics = filter_usage(loaded, [(images, fx.labels(batch=6))], ["a", "b", "c"])
    assert statistics["images"] == 6 and len(statistics["per_layer"]) == len(gated_layers(model)) == 6
    assert 0 < statistics["overall"] < 1
    assert len(statistics["per_filter"]["block_02_conv1_gated"]) == 8
    assert all(len(row) == 6 for row in statistics["per_class"].values())


@pytest.mark.parametrize("bn, finetuned_bn_trains", [("train", True), ("frozen", False)])
def test_pretrained_paths_never_train_and_bn_follows_the_run(bn, finetuned_bn_trains):
    model, _ = _adafilter(bn=bn)
    names = {v.path for v in model.trainable_weights}
    assert not any("pretrained_" in name for name in names)
    assert any("finetuned_conv" in name for name in names)
    assert any("finetuned_bn/gamma" in name for name in names) == finetuned_bn_trains
    assert any(name.startswith("stem/bn") for name in names) == finetuned_bn_trains
    assert any(name.startswith("adafilter_cell/") for name in names)


def test_a_fit_step_trains_the_finetuned_copies_and_the_gate_network():
    from models.strategies import StrategyOptions, get_strategy

    strategy = get_strategy("adafilter")
    model, _ = _adafilter()
    options = StrategyOptions(extra={"gate_lr": 0.1})
    fx.perturb([v for layer in gated_layers(model) for v in layer.finetuned_conv.weights], scale=0.3)
    model.compile(
        optimizer=strategy.optimizer(model, keras.optimizers.SGD(0.1), options),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    watched = {v.path: np.array(v) for v in model.trainable_weights}
    model.fit(fx.images(batch=8), fx.labels(batch=8), batch_size=8, epochs=1, verbose=0)
    after = {v.path: np.array(v) for v in model.trainable_weights}
    assert not np.allclose(after["adafilter_cell/lstm_cell/kernel"], watched["adafilter_cell/lstm_cell/kernel"])
    assert not np.allclose(after["block_01_conv1_gated/finetuned_conv/kernel"], watched["block_01_conv1_gated/finetuned_conv/kernel"])


def test_layers_pass_the_harness(tmp_path):
    conv = keras.layers.Conv2D(5, 3, padding="same", use_bias=False)
    conv.build((None, None, None, 4))
    bn = keras.layers.BatchNormalization()
    run_layer_test(
        GatedConv,
        {"conv": keras.layers.serialize(conv), "bn": keras.layers.serialize(bn), "finetuned_bn": "frozen", "source": "b/c"},
        [fx.images(batch=2, size=6)[..., :3].repeat(2, axis=-1)[..., :4] / 255.0, np.ones((2, 5), "float32")],
        tmp_path,
        expected_output_shape=(2, 6, 6, 5),
    )
    run_layer_test(BinaryGate, {}, np.linspace(-1, 1, 12, dtype="float32").reshape(3, 4), tmp_path, expected_output_shape=(3, 4))
    e, h = np.ones((2, 3), "float32"), np.zeros((2, 4), "float32")
    layer = RecurrentGateCell(4)
    h2, c2 = layer([e, h, h])
    assert h2.shape == c2.shape == (2, 4)
    assert RecurrentGateCell.from_config(layer.get_config()).get_config() == layer.get_config()


def test_unsupported_blocks_fail_in_one_line():
    from models.errors import ModelConfigError

    backbone = fx.tiny_backbone()
    backbone.blocks[1] = keras.layers.Identity(name="block_02")
    with pytest.raises(ModelConfigError, match="Identity"):
        build_adafilter_classifier(backbone, 3, fx.NORMALIZATION)
    assert len(gate_layers(_adafilter()[0])) == 6


def test_the_exported_network_computes_both_paths_with_deterministic_gates_and_agrees_with_keras(tmp_path):
    from export import graph, onnx_export, tflite
    from export.verify import OnnxRunner, TFLiteRunner, keras_logits, run_all

    model, _ = _adafilter()
    fx.perturb([v for layer in gated_layers(model) for v in layer.finetuned_conv.weights], scale=0.3)
    for gate_out in [layer for layer in model.layers if layer.name.startswith("adafilter_out_")]:
        fx.perturb(gate_out.weights, scale=1.0)
    images = (np.random.default_rng(0).uniform(size=(4, 8, 8, 3)) * 255).astype("uint8")
    expected = keras_logits(model, images)
    function, control_flow = graph.serving_function(model)
    saved = graph.write_saved_model(model, function, str(tmp_path / "saved_model"), 8)
    tflite_path = tmp_path / "model.tflite"
    tflite_path.write_bytes(tflite.convert(saved, "none"))
    onnx_path = str(tmp_path / "model.onnx")
    onnx_export.convert_saved_model(saved, onnx_path, 8)
    assert not control_flow
    np.testing.assert_allclose(run_all(TFLiteRunner(str(tflite_path)), images), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(run_all(OnnxRunner(onnx_path), images), expected, atol=1e-4, rtol=0)
