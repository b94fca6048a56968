"""DELTA: the attention-weighted feature-map penalty, its pretrained copy, and the channel attention."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.errors import ModelConfigError
from models.regularizers import build_penalty_terms
from models.regularizers.channel_attention import attention_from_rises, estimate_channel_attention
from models.regularizers.delta import DeltaPenalty, attention_feature_distance
from models.regularizers.parts import hook_layer_names
from models.regularizers.variables import shared_variables
from models.transfer_trainer import TransferTrainer
from tests.fixtures import NUM_CLASSES, images, labels, perturb, tiny_backbone, tiny_classifier


def uniform_attention(model, hooks):
    return [np.full((model.get_layer(h).output.shape[-1],), 1.0 / model.get_layer(h).output.shape[-1], "float32") for h in hooks]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_feature_distance_equals_the_hand_computed_value(reduction):
    rng = np.random.default_rng(0)
    current = [rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 2, 2, 3))]
    pretrained = [rng.normal(size=c.shape) for c in current]
    attention = [rng.dirichlet(np.ones(5)), rng.dirichlet(np.ones(3))]
    expected = 0.0
    for fm, fm0, w in zip(current, pretrained, attention):
        b, h, wd, c = fm.shape
        for i in range(b):
            for ch in range(c):
                expected += c * w[ch] * 0.5 * np.sum((fm[i, :, :, ch] - fm0[i, :, :, ch]) ** 2) / (h * wd)
    if reduction == "mean":
        expected /= 2  # batch of 2
    value = attention_feature_distance(
        [f.astype("float32") for f in current], [f.astype("float32") for f in pretrained], [a.astype("float32") for a in attention], reduction
    )
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_hooks_are_the_last_block_of_each_stage_and_no_stages_is_a_one_line_error():
    assert hook_layer_names(tiny_backbone()) == ["block_01", "block_03"]
    with pytest.raises(ModelConfigError) as error:
        hook_layer_names(tiny_backbone(stages=()))
    assert "declares no stages" in str(error.value) and "\n" not in str(error.value)


def test_delta_is_zero_when_the_network_equals_the_pretrained_one_and_a_step_reduces_it():
    model, backbone = tiny_classifier()
    hooks = hook_layer_names(backbone)
    term = DeltaPenalty(model, hooks, uniform_attention(model, hooks), alpha=1.0)
    x = images(4)
    view = TransferTrainer(model, terms=[term])  # logits and the hooked blocks' inputs, one forward pass
    # inference mode: BatchNorm uses moving statistics in both networks (in training mode the
    # trained network's batch statistics make the term non-zero even at w0, as in the authors' code)
    assert float(term(view(x, training=False), images=x)) == pytest.approx(0.0, abs=1e-10)
    assert float(term(model(x, training=False), images=x)) == pytest.approx(0.0, abs=1e-10)  # recomputes the features

    variables = [v for _, v in shared_variables(model, "kernels")]
    perturb(variables, scale=0.1)
    before = float(term(view(x, training=False), images=x))
    assert before > 0
    with tf.GradientTape() as tape:
        penalty = term(view(x, training=False), images=x)
    keras.optimizers.SGD(0.01).apply_gradients(zip(tape.gradient(penalty, variables), variables))
    assert float(term(view(x, training=False), images=x)) < before


def test_trainer_passes_features_from_one_forward_pass_and_logs_delta():
    model, backbone = tiny_classifier()
    hooks = hook_layer_names(backbone)
    terms = build_penalty_terms("delta", model, attention=uniform_attention(model, hooks), hooks=hooks)
    trainer = TransferTrainer(model, terms=terms)
    outputs = trainer(images(2), training=False)
    assert set(outputs) == {"logits", "features"} and set(outputs["features"]) == {h + "/input" for h in hooks}
    trainer.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    history = trainer.fit(images(8), labels(8), batch_size=4, epochs=2, verbose=0, validation_data=(images(4, seed=3), labels(4, seed=3)))
    assert {"delta", "l2_new", "val_delta", "accuracy"} <= set(history.history)
    assert history.history["delta"][-1] > 0
    # the frozen pretrained copy is the term's own (non-trainable) state; the network is not duplicated
    assert not terms[0].trainable_weights
    network_ids = {id(v) for v in model.weights}
    assert not any(id(v) in network_ids for v in terms[0].weights)
    # the pretrained copy did not move while the network trained
    fresh, _ = tiny_classifier()
    pretrained = terms[0].pretrained
    x = images(2)
    for a, h in zip(pretrained(x, training=False), hooks):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), authors_hooked_map(fresh, h, x), rtol=1e-4, atol=1e-5)


def test_attention_is_the_softmax_of_z_scored_rises():
    rises = np.array([0.0, 0.1, 0.5, -0.2])
    z = (rises - rises.mean()) / rises.std()
    expected = np.exp(z / 5) / np.exp(z / 5).sum()
    np.testing.assert_allclose(attention_from_rises(rises), expected, rtol=1e-6)
    np.testing.assert_allclose(attention_from_rises(np.zeros(4)), np.full(4, 0.25))


def test_channel_attention_estimate_has_one_weight_per_channel():
    model, backbone = tiny_classifier()
    hooks = hook_layer_names(backbone)
    batches = [(images(6, seed=s), labels(6, seed=s)) for s in range(3)]
    estimate = estimate_channel_attention(model, hooks, batches, batches, NUM_CLASSES, head_epochs=2, score_batches_count=2)
    assert [a.shape for a in estimate.attention] == [(4,), (8,)]
    for attention, rises in zip(estimate.attention, estimate.rises):
        assert attention.sum() == pytest.approx(1.0, rel=1e-5) and np.all(attention > 0)
        np.testing.assert_allclose(attention, attention_from_rises(rises), rtol=1e-5)
    assert np.isfinite(estimate.base_loss)


def test_channel_rise_is_the_loss_rise_when_filter_c_of_the_hooked_convolution_is_zeroed():
    """The authors' attention: zero filter c of the hooked block's last convolution (BatchNorm then
    makes channel c a constant, before the residual add), in a plain forward pass of the network."""
    model, backbone = tiny_classifier()
    hooks = ["block_01"]
    x, y = images(4), labels(4)
    keras.utils.set_random_seed(0)
    estimate = estimate_channel_attention(model, hooks, [(x, y)], [(x, y)], NUM_CLASSES, head_epochs=0, score_batches_count=1, seed=0)
    # rebuild the same head (seeded Glorot initialisation, no training) and compute the rise of channel 2 by hand
    head = keras.layers.Dense(NUM_CLASSES, kernel_initializer=keras.initializers.GlorotUniform(0))
    head.build((None, model.get_layer("head").output.shape[-1]))
    features = keras.Model(model.input, model.get_layer("head").output)

    def loss():
        logits = head(features(x, training=False))
        return float(np.mean(keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))))

    kernel = model.get_layer("block_01").conv2.kernel
    original = keras.ops.convert_to_numpy(kernel)
    base = loss()
    zeroed = original.copy()
    zeroed[..., 2] = 0.0
    kernel.assign(zeroed)
    rise = loss() - base
    kernel.assign(original)
    assert estimate.rises[0][2] == pytest.approx(rise, rel=1e-4, abs=1e-6)
    # zeroing the block's output channel instead (the former reading) gives another rise
    h = model.get_layer("block_01").output
    masked = keras.Model(model.input, h)(x, training=False) * np.array([1, 1, 0, 1], "float32")
    for name in ("block_02", "block_03"):
        masked = model.get_layer(name)(masked, training=False)
    other = float(np.mean(keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(y, head(model.get_layer("head")(masked)), from_logits=True)))) - base
    assert abs(other - rise) > 1e-4


def authors_hooked_map(model, hook, x, training=False):
    """The DELTA authors' hook, by hand with tf.nn: the raw output of the hooked block's last
    convolution, `conv2(relu(bn1(conv1(x))))`, before bn2 and the residual add."""
    block = model.get_layer(hook)
    inputs = np.asarray(keras.Model(model.input, block.input)(x, training=training), np.float64)
    if block.strides > 1:
        inputs = np.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
    h = tf.nn.conv2d(inputs, np.asarray(block.conv1.kernel, np.float64), block.strides, "VALID" if block.strides > 1 else "SAME").numpy()
    bn = block.bn1
    if training:
        mean, variance = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
    else:
        mean, variance = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)
    h = np.maximum((h - mean) / np.sqrt(variance + bn.epsilon) * np.asarray(bn.gamma) + np.asarray(bn.beta), 0.0)
    return tf.nn.conv2d(h, np.asarray(block.conv2.kernel, np.float64), 1, "SAME").numpy()


@pytest.mark.parametrize("training", [False, True])
def test_delta_reads_the_raw_output_of_the_last_convolution_as_the_authors_do(training):
    model, backbone = tiny_classifier()
    fresh, _ = tiny_classifier()
    hooks = hook_layer_names(backbone)
    rng = np.random.default_rng(1)
    attention = [rng.dirichlet(np.ones(model.get_layer(h).output.shape[-1])).astype("float32") for h in hooks]
    term = DeltaPenalty(model, hooks, attention, alpha=0.5)
    assert term.feature_inputs == tuple(hooks)
    perturb([v for _, v in shared_variables(model, "kernels")], scale=0.1)
    x = images(4)
    expected = 0.0
    for h, w in zip(hooks, attention):
        fm = authors_hooked_map(model, h, x, training)
        fm0 = authors_hooked_map(fresh, h, x)  # the pretrained network runs in inference mode
        b, height, width, c = fm.shape
        expected += np.mean([c * np.sum(w * 0.5 * np.sum((fm[i] - fm0[i]) ** 2, axis=(0, 1)) / (height * width)) for i in range(b)])
    outputs = TransferTrainer(model, terms=[term])(x, training=training)
    assert float(term(outputs, images=x, training=training)) == pytest.approx(0.5 * expected, rel=1e-4)
    # the block output (after bn2, the residual add and the ReLU) is another map
    block_output = np.asarray(keras.Model(model.input, model.get_layer(hooks[0]).output)(x, training=False))
    assert not np.allclose(block_output, authors_hooked_map(model, hooks[0], x), atol=1e-3)


def test_delta_and_l2sp_train_a_spottune_model():
    from models.spottune.classifier import build_spottune_classifier

    backbone = tiny_backbone()
    model = build_spottune_classifier(backbone, NUM_CLASSES, normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, policy_widths=(4, 8, 8))
    hooks = hook_layer_names(backbone)
    terms = build_penalty_terms("delta", model, attention=uniform_attention(model, hooks), hooks=hooks)
    terms += build_penalty_terms("l2sp", model)[:1]
    # routed blocks are read at their output, and so are their frozen copies in the pretrained network
    assert terms[0].feature_layers == tuple(hooks) and terms[0].feature_inputs == ()
    # the pretrained copy is built from the frozen copies F_l: at w0 it matches the routed network
    x = images(2)
    view = keras.Model(model.input, {"features": {h: model.get_layer(h).output for h in hooks}})
    assert float(terms[0](view(x, training=False), images=x)) == pytest.approx(0.0, abs=1e-10)
    assert not terms[0].trainable_weights  # the copies of the frozen blocks F_l stay frozen
    trainer = TransferTrainer(model, terms=terms)
    trainer.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = trainer.fit(images(8), labels(8), batch_size=4, epochs=1, verbose=0)
    assert history.history["delta"][-1] > 0 and history.history["l2sp"][-1] > 0
