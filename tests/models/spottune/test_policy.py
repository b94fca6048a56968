"""Policy layers: the authors' per-image network, the global policy, fixed decisions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.spottune.fixed_policy import FixedPolicy
from models.spottune.global_policy import GlobalPolicy
from models.spottune.gumbel_softmax import GumbelSoftmax
from models.spottune.policy_network import PolicyNetwork


def images(batch=4, size=8, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype("float32")


def test_policy_network_has_the_authors_layout():
    policy = PolicyNetwork(num_blocks=12)
    logits = policy(images(2, 8), training=False)
    assert tuple(logits.shape) == (2, 12, 2)
    # conv 3->32, one basic block per stage 32->64->128->256 (two 3x3 convs, two BN each),
    # stem BN, head BN, Dense 256 -> 2 * 12.
    convs = 27 * 32 + 9 * (32 * 64 + 64 * 64) + 9 * (64 * 128 + 128 * 128) + 9 * (128 * 256 + 256 * 256)
    bns = 4 * (32 + 2 * 64 + 2 * 128 + 2 * 256 + 256)
    assert policy.count_params() == convs + bns + 256 * 24 + 24
    assert [stage.strides for stage in policy.stages] == [2, 2, 2]
    assert [stage.shortcut for stage in policy.stages] == ["avg_pool"] * 3


def test_policy_network_resizes_its_input():
    policy = PolicyNetwork(num_blocks=3, widths=(4, 8, 8), image_size=8)
    for size in (8, 12, 17):
        assert tuple(policy(images(2, size), training=False).shape) == (2, 3, 2)
    # With image_size, any input size gives the policy's decisions at 8x8.
    small = tf.image.resize(images(2, 16), (8, 8)).numpy()
    np.testing.assert_allclose(
        policy(images(2, 16), training=False), policy(small, training=False), rtol=1e-5, atol=1e-5
    )


def test_policy_network_batchnorm_follows_training():
    policy = PolicyNetwork(num_blocks=2, widths=(4, 8))
    x = images(4, 8)
    assert not np.allclose(policy(x, training=True), policy(x, training=False))
    assert len(policy.trainable_weights) == 1 + 2 + 6 + 2 + 2


def test_global_policy_broadcasts_one_pair_per_block_and_sums_gradients():
    policy = GlobalPolicy(num_blocks=3)
    x = images(5, 4)
    logits = policy(x)
    assert tuple(logits.shape) == (5, 3, 2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(logits), 0.0)
    policy.logits.assign(np.arange(6, dtype="float32").reshape(3, 2))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(policy(x)[..., 1])
    np.testing.assert_array_equal(tape.gradient(loss, policy.logits).numpy(), [[0, 5], [0, 5], [0, 5]])


def test_fixed_policy_makes_the_gate_return_its_decisions():
    decisions = [0, 1, 1, 0]
    policy = FixedPolicy(decisions)
    logits = policy(images(6, 4))
    expected = np.tile(np.eye(2, dtype="float32")[decisions], (6, 1, 1))
    for gate in (GumbelSoftmax(seed=0), GumbelSoftmax(temperature=1e-3, seed=1), GumbelSoftmax(inference="sample")):
        for training in (True, False):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(gate(logits, training=training)), expected)
    # The soft sample is softmax((logits + noise) / tau) of float32 values: it is one-hot only up to
    # float32 rounding (0.99999994 instead of 1.0 on some CPUs), so compare at float32 precision.
    soft = GumbelSoftmax(hard=False, seed=2)(logits, training=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(soft), expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        FixedPolicy([0, 2])


@pytest.mark.parametrize(
    "make",
    [
        lambda: PolicyNetwork(num_blocks=3, widths=(4, 8, 8), image_size=8, name="policy"),
        lambda: GlobalPolicy(num_blocks=3, logits_initializer="random_normal", name="policy"),
        lambda: FixedPolicy([1, 0, 1], name="policy"),
    ],
)
def test_policies_save_and_load(tmp_path, make):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, make()(inputs))
    x = images(3, 10)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.save(tmp_path / "policy.keras")
    loaded = keras.saving.load_model(tmp_path / "policy.keras", safe_mode=True)
    assert type(loaded.get_layer("policy")) is type(model.get_layer("policy"))
    assert loaded.get_layer("policy").get_config() == model.get_layer("policy").get_config()
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(x, training=False)), expected)
