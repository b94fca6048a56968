"""The strategy registry: what trains, what stays frozen, and the BatchNorm policy."""

import keras
import numpy as np
import pytest

from models.backbones import build_backbone
from models.backbones.base import block_name
from models.errors import ModelConfigError
from models.strategies import STRATEGIES, StrategyOptions, get_strategy

NORM = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "scale": 1 / 255}


def _build(name, **options):
    backbone = build_backbone("resnet20", weights="none")
    strategy = get_strategy(name)
    opts = StrategyOptions(**options)
    strategy.check(opts, len(backbone.blocks))
    return strategy.build(backbone, 5, NORM, opts), backbone


def _trains(model, layer_name):
    return bool(model.get_layer(layer_name).trainable_weights)


def _one_step_changes(model):
    """Which top-level layers' weights change after one SGD step on random data."""
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {layer.name: [np.array(w) for w in layer.get_weights()] for layer in model.layers}
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.uniform(0, 255, (8, 16, 16, 3)).astype("float32"), rng.integers(0, 5, (8,)))
    changed = set()
    for layer in model.layers:
        after = layer.get_weights()
        if any(not np.array_equal(a, b) for a, b in zip(before[layer.name], after)):
            changed.add(layer.name)
    return changed


def test_registry_lists_the_baselines_and_spottune_family():
    assert {"finetune", "linear", "last_k", "spottune", "spottune_global", "global_k"} <= set(STRATEGIES)


def test_unknown_strategy_is_a_one_line_error():
    with pytest.raises(ModelConfigError, match="unknown strategy 'spotune'.*finetune"):
        get_strategy("spotune")


def test_linear_probe_changes_only_the_classifier():
    model, _ = _build("linear")
    assert _one_step_changes(model) == {"classifier"}


def test_finetune_changes_every_layer_with_weights():
    model, backbone = _build("finetune")
    changed = _one_step_changes(model)
    assert {"stem", "head", "classifier"} - {"head"} <= changed
    assert all(block_name(i) in changed for i in range(len(backbone.blocks)))


def test_last_k_trains_exactly_the_last_k_blocks_head_and_classifier():
    model, backbone = _build("last_k", k=2)
    changed = _one_step_changes(model)
    blocks = len(backbone.blocks)
    assert {block_name(blocks - 2), block_name(blocks - 1), "classifier"} <= changed
    assert "stem" not in changed
    assert not any(block_name(i) in changed for i in range(blocks - 2))


def test_bn_frozen_keeps_pretrained_statistics_while_convolutions_train():
    model, _ = _build("finetune", bn="frozen")
    block = model.get_layer(block_name(0))
    bns = [l for l in block._flatten_layers(include_self=False, recursive=True) if isinstance(l, keras.layers.BatchNormalization)]
    convs = [l for l in block._flatten_layers(include_self=False, recursive=True) if isinstance(l, keras.layers.Conv2D)]
    stats_before = [keras.ops.convert_to_numpy(bn.moving_mean) for bn in bns]
    kernels_before = [keras.ops.convert_to_numpy(c.kernel) for c in convs]
    _one_step_changes(model)
    assert all(np.array_equal(a, keras.ops.convert_to_numpy(bn.moving_mean)) for a, bn in zip(stats_before, bns))
    assert any(not np.array_equal(a, keras.ops.convert_to_numpy(c.kernel)) for a, c in zip(kernels_before, convs))


@pytest.mark.parametrize("name, k, words", [("last_k", None, "needs --k"), ("last_k", 10, "--k 10 is out of range"),
                                            ("global_k", 0, "--k 0 is out of range"), ("global_k", None, "needs --k"),
                                            ("finetune", 3, "no meaning")])
def test_k_is_checked_against_the_number_of_blocks(name, k, words):
    backbone = build_backbone("resnet20", weights="none")
    with pytest.raises(ModelConfigError) as error:
        get_strategy(name).check(StrategyOptions(k=k), len(backbone.blocks))
    assert words in str(error.value) and "\n" not in str(error.value)
