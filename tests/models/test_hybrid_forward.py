"""Hybrid Forward: the hybrid paths run exactly the stages they claim, the teacher never moves, the
student's BatchNorm statistics come from its own path, the balance, and only the student is saved."""

import keras
import numpy as np

from models.backbones import build_backbone
from models.backbones.base import block_name
from models.classifier import assemble_classifier, split_classifier
from models.hybrid_forward.hybrid_paths import alternating
from models.strategies import get_strategy
from models.transfer_trainer import TransferTrainer
from tests.fixtures import NORMALIZATION, images, labels, perturb, tiny_classifier

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _trainer(network, lr=0.05):
    trainer = get_strategy("hybrid_forward").trainer_class(network, terms=[], name="trainer")
    trainer.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9), loss=CE)
    return trainer


def test_paths_alternate():
    assert alternating(3, "S") == "STS" and alternating(3, "T") == "TST" and alternating(4, "T") == "TSTS"


def test_hybrid_paths_use_exactly_the_stages_they_claim():
    keras.utils.set_random_seed(0)
    network = assemble_classifier(build_backbone("resnet20", weights="none"), 3, normalization=NORMALIZATION)
    trainer = _trainer(network)
    for index in range(9):
        perturb(network.get_layer(block_name(index)), scale=0.2, seed=index)  # the student moves away from the teacher
    paths, teacher, x = trainer.paths, trainer.teacher, images(2, size=16)
    assert trainer.owners == ("STS", "TST") and paths.segments == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    parts = split_classifier(network)

    def manual(owners):
        stem = parts.stem if owners[0] == "S" else teacher.get_layer("teacher_stem")
        y = stem(parts.normalization(x), training=False)
        for index in range(9):
            owner = owners[index // 3]
            block = parts.blocks[index] if owner == "S" else teacher.get_layer("teacher_" + block_name(index))
            y = block(y, training=False)
        return np.asarray(parts.classifier(parts.head(y)))

    results = {}
    for owners in ("STS", "TST", "SSS", "TTT"):
        results[owners] = np.asarray(paths(x, owners, training=False))
        np.testing.assert_allclose(results[owners], manual(owners), rtol=1e-5, atol=1e-6)
        assert [layer.name for layer in paths.layers_of(owners)][1:4] == [
            ("" if owners[0] == "S" else "teacher_") + block_name(i) for i in range(3)
        ]
    np.testing.assert_allclose(results["SSS"], np.asarray(network(x, training=False)), rtol=1e-5, atol=1e-6)
    assert len({round(float(r.sum()), 4) for r in results.values()}) == 4  # four different networks


def test_teacher_frozen_student_statistics_from_its_own_path_and_the_balance():
    network, _ = tiny_classifier()
    trainer = _trainer(network)
    plain_network, _ = tiny_classifier()
    plain = TransferTrainer(plain_network, [])
    plain.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=CE)
    teacher_before = [np.array(w) for w in trainer.teacher.get_weights()]
    x, y = images(4), labels(4)
    logs = trainer.train_on_batch(x, y, return_dict=True)
    plain.train_on_batch(x, y)
    for a, b in zip(teacher_before, trainer.teacher.get_weights()):
        np.testing.assert_array_equal(a, b)
    statistics = [v for v in network.non_trainable_variables if "moving" in v.path]
    plain_statistics = [v for v in plain_network.non_trainable_variables if "moving" in v.path]
    assert statistics
    for a, b in zip(statistics, plain_statistics):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    # the hybrid losses' gradients reach the student (through the StatelessScope)
    moved = [not np.allclose(np.asarray(a), np.asarray(b)) for a, b in zip(network.trainable_variables, plain_network.trainable_variables)]
    assert all(moved)
    # the weighted hybrid losses add exactly the student's cross-entropy
    np.testing.assert_allclose(logs["loss"], 2 * logs["student_ce"], rtol=1e-5)
    np.testing.assert_allclose(logs["hybrid_weight"] * (logs["hybrid_sts"] + logs["hybrid_tst"]), logs["student_ce"], rtol=1e-5)


def test_only_the_student_is_saved(tmp_path):
    network, _ = tiny_classifier()
    trainer = _trainer(network)
    trainer.fit(images(8), labels(8), batch_size=4, epochs=1, verbose=0)
    assert trainer.teacher.count_params() > 0 and not trainer.teacher.trainable_weights
    network.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert loaded.count_params() == tiny_classifier()[0].count_params()
    assert not any(layer.name.startswith("teacher") for layer in loaded.layers)
