"""Every registered adaptune layer and loss term through the shared harness (tests/harness.py),
and a saved model loading in a fresh Python after `import models` alone."""

import subprocess
import sys

import keras
import numpy as np
import pytest

from models import registry
from models.backbones.basic_block import BasicBlock
from models.backbones.conv_stem import ConvStem
from models.backbones.fire_module import FireModule
from models.adafilter.gate_network import RecurrentGateCell, ZeroState
from models.adafilter.residual_shortcut import ResidualShortcut
from models.backbones.pooling_head import PoolingHead
from models.fitnets.hint_term import HintTerm
from models.l2t_ww.weighted_matching import WeightedFeatureMatching
from models.preprocessing import ChannelNormalization
from models.regularizers import build_penalty_terms
from models.spottune.fixed_policy import FixedPolicy
from models.spottune.global_k_penalty import GlobalKPenalty
from models.spottune.global_policy import GlobalPolicy
from models.spottune.gumbel_softmax import GumbelSoftmax, TopKGumbelGate
from models.spottune.policy_network import PolicyNetwork
from models.spottune.routed_block import RoutedBlock
from models.spottune.stem_policy import StemFeaturePolicy
from models.transtailor.filter_scale import FilterScale
from tests.fixtures import images, labels, perturb, tiny_backbone, tiny_classifier
from tests.harness import run_layer_test, run_term_test
from tests.rundir.test_layering import REPO

registry.import_all_layers()  # registers every adaptune object

RNG = np.random.default_rng(0)
FEATURES = RNG.normal(size=(2, 8, 8, 4)).astype("float32")
PIXELS = RNG.uniform(0, 255, (2, 8, 8, 3)).astype("float32")
LOGITS = RNG.normal(size=(2, 3, 2)).astype("float32")
EMBEDDING = RNG.normal(size=(2, 5)).astype("float32")
STATE = RNG.normal(size=(2, 3)).astype("float32")
ROUTING = np.array([[[0.0, 1.0]], [[1.0, 0.0]]], "float32")

LAYER_CASES = {
    "BasicBlock": (BasicBlock, {"filters": 8, "strides": 2}, FEATURES),
    "ConvStem": (ConvStem, {"filters": 4, "activation": "relu"}, PIXELS),
    "FireModule": (FireModule, {"squeeze_filters": 2, "expand_filters": 4}, FEATURES),
    "PoolingHead": (PoolingHead, {"batch_norm": True, "activation": "relu"}, FEATURES),
    "ChannelNormalization": (ChannelNormalization, {"mean": [0.5] * 3, "std": [0.25] * 3}, PIXELS),
    "FixedPolicy": (FixedPolicy, {"decisions": [0, 1, 1]}, PIXELS),
    "GlobalKPenalty": (GlobalKPenalty, {"target_k": 1, "count_weight": 0.5, "binarize_weight": 0.1}, LOGITS),
    "GlobalPolicy": (GlobalPolicy, {"num_blocks": 3, "logits_initializer": "random_normal"}, PIXELS),
    "GumbelSoftmax": (GumbelSoftmax, {"temperature": 2.0, "seed": 3}, LOGITS),
    "TopKGumbelGate": (TopKGumbelGate, {"top_k": 1, "temperature": 2.0, "seed": 3}, LOGITS),
    "PolicyNetwork": (PolicyNetwork, {"num_blocks": 3, "widths": (4, 4, 8, 8)}, PIXELS),
    "StemFeaturePolicy": (StemFeaturePolicy, {"num_blocks": 3, "widths": (4, 8)}, FEATURES),
    "ResidualShortcut": (ResidualShortcut, {"filters": 8, "strides": 2}, FEATURES),
    "FilterScale": (FilterScale, {}, FEATURES),
    "ZeroState": (ZeroState, {"units": 3}, FEATURES),
    "RecurrentGateCell": (RecurrentGateCell, {"units": 3}, [EMBEDDING, STATE, STATE]),
}


def routed_block_case():
    return (
        RoutedBlock,
        {"pretrained": BasicBlock(4, name="pretrained"), "finetuned": BasicBlock(4, name="finetuned"), "index": 0},
        [FEATURES, ROUTING],
    )


def spottune_network():
    from models.spottune.classifier import build_spottune_classifier

    return build_spottune_classifier(tiny_backbone(), 3, normalization={"mean": [0.5] * 3, "std": [0.25] * 3}, policy_widths=(4, 8, 8))


def sp_term(name):
    def make(network):
        fisher = None
        if name.endswith("fisher"):
            from models.regularizers.variables import keyed_variables, shared_variables

            fisher = {k: np.full(tuple(v.shape), 1.5, "float32") for k, v in keyed_variables(shared_variables(network, "kernels")).items()}
        term = build_penalty_terms(name, network, alpha=1.0, fisher=fisher)[0]
        perturb(term.penalized_variables(), scale=0.05)  # away from w0, so the term is not zero
        return term

    return make


def delta_term(network):
    hooks = ["block_01", "block_03"]
    term = build_penalty_terms("delta", network, alpha=1.0, hooks=hooks, attention=[np.full(c, 1 / c, "float32") for c in (4, 8)])[0]
    perturb([v for v in network.trainable_variables if "kernel" in v.name], scale=0.05)
    return term


def teacher_term(cls, **kwargs):
    def make(network):
        term = cls(**kwargs)
        term.bind(network)  # the teacher / source: a frozen copy of the network as it is now
        perturb([v for v in network.trainable_variables if "kernel" in v.name], scale=0.05)  # the student drifts from it
        return term

    return make


def new_weights_term(network):
    return build_penalty_terms("l2sp", network, beta=0.5)[1]


TERM_CASES = {
    "L2SPPenalty": sp_term("l2sp_fisher"),
    "L1SPPenalty": sp_term("l1sp"),
    "GroupLassoSPPenalty": sp_term("gl_sp_fisher"),
    "WeightDecayPenalty": new_weights_term,
    "DeltaPenalty": delta_term,
    "HintTerm": teacher_term(HintTerm, stage=1, weight=1.0, name="hint"),
    "WeightedFeatureMatching": teacher_term(WeightedFeatureMatching, pairs="same", name="l2t_ww"),
}
# Abstract bases and the trainer/optimizer, tested through the cases above and in test_split_optimizer.
# DelayedStart (a learning-rate schedule) is round-tripped inside the parameter-group optimizer in tests/app/test_recipe.py.
NOT_LAYER_CASES = {"TrainingTerm", "StartingPointTerm", "TransferTrainer", "SplitOptimizer", "L2TWWTrainer", "HybridForwardTrainer", "DelayedStart"}
# Run through the harness in their own package's tests (tests/models/adafilter/test_adafilter.py).
HARNESSED_IN_PACKAGE_TESTS = {"GatedConv", "BinaryGate"}


def test_every_registered_object_has_a_harness_case():
    registered = {key.split(">", 1)[1] for key in keras.saving.get_custom_objects() if key.startswith("adaptune>")}
    covered = set(LAYER_CASES) | set(TERM_CASES) | {"RoutedBlock"} | NOT_LAYER_CASES | HARNESSED_IN_PACKAGE_TESTS
    assert registered - covered == set()


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_layer_harness(name, tmp_path):
    cls, kwargs, inputs = LAYER_CASES[name]
    keras.utils.set_random_seed(0)
    run_layer_test(cls, kwargs, inputs, tmp_path)


def test_routed_block_harness(tmp_path):
    cls, kwargs, inputs = routed_block_case()
    loaded = run_layer_test(cls, kwargs, inputs, tmp_path)
    assert isinstance(loaded.layers[-1], RoutedBlock)


@pytest.mark.parametrize("name", sorted(TERM_CASES))
def test_term_harness(name, tmp_path):
    network, _ = tiny_classifier()
    run_term_test(TERM_CASES[name], network, images(4), labels(4), tmp_path)


def test_term_harness_on_a_spottune_network(tmp_path):
    run_term_test(sp_term("l2sp"), spottune_network(), images(4), labels(4), tmp_path)


def test_a_saved_spottune_model_loads_in_a_fresh_python_after_import_models(tmp_path):
    path = tmp_path / "model.keras"
    network = spottune_network()
    network.save(path)
    expected = np.asarray(network(images(2), training=False))
    np.save(tmp_path / "images.npy", np.asarray(images(2)))
    code = (
        "import sys, numpy as np, keras, models; "
        f"m = keras.saving.load_model({str(path)!r}, safe_mode=True); "
        f"print(np.asarray(m(np.load({str(tmp_path / 'images.npy')!r}), training=False)).tolist())"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.array(eval(result.stdout.strip().splitlines()[-1])), expected, rtol=1e-5, atol=1e-6)
