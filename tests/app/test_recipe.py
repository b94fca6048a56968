"""The recipe that transfers: parameter groups at their own rates, LP-FT's two phases (and their resume),
the default backbone for a user's own data, and the warning for too few optimizer steps."""

import json
import sys

import keras
import numpy as np
import pytest

from tests.app.helpers import FAST_TRAIN, REPO, run_cli
from tests.fixtures import images, labels, tiny_classifier


def constant_config(**values):
    from rundir.config import TrainConfig

    return TrainConfig(schedule="constant", momentum=0.0, warmup_epochs=0, epochs=2, **values)


def one_step_changes(optimizer, model):
    """{variable path: (change made by one apply of `optimizer`, gradient)} for one batch of the tiny classifier."""
    import tensorflow as tf

    x, y = images(), labels()
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x, training=True))
    variables = model.trainable_variables
    grads = tape.gradient(loss, variables)
    before = [keras.ops.convert_to_numpy(v) for v in variables]
    optimizer.apply(grads, variables)
    return {v.path: (keras.ops.convert_to_numpy(v) - b, keras.ops.convert_to_numpy(g)) for v, b, g in zip(variables, before, grads)}


def test_a_step_changes_the_new_layers_by_the_head_rate_and_the_pretrained_ones_by_lr():
    from app.trainer import network_optimizer

    model, _ = tiny_classifier()
    optimizer = network_optimizer(constant_config(lr=0.01, head_lr_ratio=10.0), steps=5, new_parts=("classifier/",))
    changes = one_step_changes(optimizer, model)
    seen = set()
    for path, (change, grad) in changes.items():
        rate = 0.1 if path.startswith("classifier/") else 0.01
        if np.abs(grad).max() > 0:
            np.testing.assert_allclose(change, -rate * grad, rtol=1e-3, atol=2e-7, err_msg=path)  # float32 rounding of w + dw
            seen.add(path.split("/")[0])
    assert {"classifier", "stem", "block_01"} <= seen


def test_with_ratio_one_and_no_head_phase_the_optimizer_is_the_single_one_of_earlier_runs():
    from app.trainer import network_optimizer

    optimizer = network_optimizer(constant_config(lr=0.01), steps=5, new_parts=("classifier/",))
    assert isinstance(optimizer, keras.optimizers.SGD)  # so the checkpoints of earlier runs resume unchanged


def test_in_the_head_phase_only_the_new_layers_move_then_every_layer_does():
    from app.trainer import network_optimizer

    model, _ = tiny_classifier()
    optimizer = network_optimizer(constant_config(lr=0.01, head_lr_ratio=10.0, head_epochs=1), steps=1, new_parts=("classifier/",))
    first = one_step_changes(optimizer, model)  # step 0: the head phase
    for path, (change, _) in first.items():
        if path.startswith("classifier/"):
            assert np.abs(change).max() > 0, path
        else:
            assert np.abs(change).max() == 0, f"{path} moved in the head phase"
    second = one_step_changes(optimizer, model)  # step 1: every layer
    moved = {path.split("/")[0] for path, (change, _) in second.items() if np.abs(change).max() > 0}
    assert {"classifier", "stem", "block_01"} <= moved


def test_the_delayed_schedule_is_zero_then_the_inner_schedule_restarted_and_survives_serialisation():
    from models.schedules import DelayedStart

    inner = keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10)
    rate = DelayedStart(inner, delay_steps=4)
    assert float(rate(0)) == 0.0 and float(rate(3)) == 0.0
    assert float(rate(4)) == pytest.approx(0.1)
    assert float(rate(9)) == pytest.approx(float(inner(5)))
    copy = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(rate))
    assert [float(copy(s)) for s in range(12)] == pytest.approx([float(rate(s)) for s in range(12)])


def test_the_two_group_optimizer_with_a_head_phase_survives_serialisation():
    from app.trainer import network_optimizer

    from rundir.config import TrainConfig

    config = TrainConfig(lr=0.01, head_lr_ratio=10.0, head_epochs=1, epochs=3, warmup_epochs=0)  # cosine schedules
    optimizer = network_optimizer(config, steps=3, new_parts=("classifier/",))
    copy = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    for original, restored in ((optimizer.main, copy.main), (optimizer.secondary, copy.secondary)):
        assert [float(restored._learning_rate(s)) for s in range(6)] == pytest.approx([float(original._learning_rate(s)) for s in range(6)])
    assert [float(copy.main._learning_rate(s)) for s in (0, 2, 3)] == pytest.approx([0.0, 0.0, 0.01])  # held for the head epoch
    assert float(copy.secondary._learning_rate(0)) == pytest.approx(0.1)
    assert copy.secondary_prefixes == ("classifier/",)


def test_the_l2t_ww_lookahead_steps_each_variable_at_its_groups_rate():
    from app.trainer import network_optimizer
    from models.l2t_ww.lookahead import SGDSettings

    model, _ = tiny_classifier()
    optimizer = network_optimizer(constant_config(lr=0.01, head_lr_ratio=10.0), steps=5, new_parts=("classifier/",))
    optimizer.build(model.trainable_variables)
    variables = model.trainable_variables
    rates = dict(zip((v.path for v in variables), (float(r) for r in SGDSettings(optimizer).learning_rates(variables))))
    assert rates["classifier/kernel"] == pytest.approx(0.1)
    assert rates["stem/conv/kernel"] == pytest.approx(0.01)


def test_strategies_put_their_new_random_parts_in_the_head_group():
    from models.strategies import StrategyOptions, get_strategy

    options = StrategyOptions()
    assert get_strategy("finetune").new_parts(options) == ("classifier/",)
    assert "regressor/" in get_strategy("fitnets").new_parts(options)
    assert any(part.startswith("l2t_ww/l2t_match_") for part in get_strategy("l2t_ww").new_parts(options))


def test_the_imagenet_recipe_sets_the_head_ratio_and_a_flag_wins():
    from app.train import build_parser, config_from_args

    recipe = config_from_args(build_parser().parse_args(["--backbone", "mobilenet_v2"]))
    assert (recipe.lr, recipe.head_lr_ratio, recipe.bn) == (0.001, 10.0, "frozen")
    given = config_from_args(build_parser().parse_args(["--backbone", "mobilenet_v2", "--head-lr-ratio", "3"]))
    assert given.head_lr_ratio == 3.0
    plain = config_from_args(build_parser().parse_args(["--backbone", "resnet20"]))
    assert plain.head_lr_ratio == 1.0  # no recipe: one rate, as before


def test_lp_ft_takes_a_third_of_the_epochs_for_its_head_phase_unless_told():
    from app.train import build_parser, config_from_args

    parse = build_parser().parse_args
    assert config_from_args(parse(["--backbone", "resnet20", "--strategy", "lp_ft", "--epochs", "9"])).head_epochs == 3
    assert config_from_args(parse(["--backbone", "resnet20", "--strategy", "lp_ft", "--epochs", "1"])).head_epochs == 0
    assert config_from_args(parse(["--backbone", "resnet20", "--strategy", "lp_ft", "--epochs", "9", "--head-epochs", "5"])).head_epochs == 5
    assert config_from_args(parse(["--backbone", "resnet20", "--epochs", "9"])).head_epochs == 0  # finetune: no head phase


def test_a_head_phase_as_long_as_the_run_is_one_line():
    from models.errors import ModelConfigError
    from rundir.config import TrainConfig

    with pytest.raises(ModelConfigError, match=r"--head-epochs 3 must be in 0..2"):
        TrainConfig(epochs=3, head_epochs=3).validate()
    with pytest.raises(ModelConfigError, match="--head-lr-ratio must be a positive number"):
        TrainConfig(head_lr_ratio=0.0).validate()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--dataset", "folder", "--data-dir", "PHOTOS"], ("mobilenet_v2", 96)),
        (["--dataset", "vgg-flowers"], ("mobilenet_v2", None)),  # a Decathlon task keeps its 72 px
        (["--dataset", "folder", "--data-dir", "PHOTOS", "--image-size", "128"], ("mobilenet_v2", 128)),
        (["--dataset", "folder", "--data-dir", "PHOTOS", "--backbone", "resnet20"], ("resnet20", None)),
    ],
)
def test_naming_data_without_a_backbone_picks_the_offline_imagenet_backbone_and_its_recipe(argv, expected):
    from app.train import build_parser, chosen_backbone_line, config_from_args, explicit_flags

    args = build_parser().parse_args(argv)
    config = config_from_args(args)
    assert (config.backbone, config.image_size) == expected
    line = chosen_backbone_line(config, set(explicit_flags(args)))
    if "--backbone" in argv:
        assert line == ""
    else:
        assert (config.bn, config.lr, config.head_lr_ratio) == ("frozen", 0.001, 10.0)
        assert line.startswith("backbone: mobilenet_v2 (ImageNet weights") and "\n" not in line
        assert f"{config.image_size or 72} px" in line


def test_too_few_optimizer_steps_is_one_warning_naming_the_epochs_that_would_do():
    from app.training import few_steps_warning
    from rundir.config import TrainConfig

    line = few_steps_warning(TrainConfig(epochs=3, batch_size=64), steps_per_epoch=4)
    assert line.startswith("warning: only 12 optimizer steps") and "--epochs 25" in line and "\n" not in line
    assert few_steps_warning(TrainConfig(epochs=25, batch_size=64), steps_per_epoch=4) == ""


def _weights(run):
    from rundir.run import load_keras_model

    return load_keras_model(str(run / "model.keras")).get_weights()


@pytest.mark.slow
@pytest.mark.parametrize("killed_after", [1, 3], ids=["in-the-head-phase", "in-the-fine-tuning-phase"])
def test_lp_ft_killed_in_either_phase_resumes_to_the_uninterrupted_runs_weights(tmp_path, killed_after):
    from tests.app.test_reliability import _kill_after_epochs

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    train = ["--strategy", "lp_ft", "--epochs", "5", "--head-epochs", "2", "--head-lr-ratio", "10", *FAST_TRAIN]
    result = run_cli("app.train", "--out", whole, *train)
    assert "warning: only" not in result.stderr  # 5 epochs of 23 batches: enough steps
    left = _kill_after_epochs([sys.executable, "-m", "app.train", "--out", str(broken), *train], broken, killed_after)
    assert killed_after <= left < 5, f"the kill came too late: {left} epochs"
    run_cli("app.train", "--resume", broken)

    history = json.loads((whole / "metrics.json").read_text())["history"]
    assert history["learning_rate"][0] == 0.0 and history["head_learning_rate"][0] > 0  # epoch 0: the head alone
    assert history["learning_rate"][2] > 0  # epoch 2: every layer
    wa, wb = _weights(whole), _weights(broken)
    scale = max(float(np.max(np.abs(w))) for w in wa)
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(wa, wb)) <= 1e-5 * scale


@pytest.mark.slow
def test_lp_ft_records_its_head_phase_and_its_fine_tuning_phase_moves_the_backbone(tmp_path):
    from models.backbones import build_backbone

    run = tmp_path / "run"
    result = run_cli("app.train", "--out", run, "--strategy", "lp_ft", "--epochs", "2", "--head-epochs", "1", *FAST_TRAIN)
    assert "warning: only 46 optimizer steps" in result.stderr  # 2 epochs of 23 batches of 64
    config = json.loads((run / "config.json").read_text())
    assert (config["strategy"], config["head_epochs"]) == ("lp_ft", 1)
    pretrained = np.array(build_backbone("resnet20").stem.weights[0])
    trained = [w for w in _weights(run) if w.shape == pretrained.shape]
    assert not any(np.array_equal(w, pretrained) for w in trained)  # the fine-tuning phase moved the stem


def test_the_readme_names_the_recipe_flags():
    text = (REPO / "README.md").read_text()
    for needle in ("--head-lr-ratio", "--head-epochs", "lp_ft"):
        assert needle in text, needle


def latin_characters(shared_dir, root):
    """The Latin alphabet of ../shared's Omniglot, one class folder per character (26 classes, 20 drawings each)."""
    alphabet = shared_dir / "data" / "omniglot-small" / "images_background_small1" / "Latin"
    root.mkdir()
    for character in sorted(alphabet.iterdir()):
        (root / f"Latin_{character.name}").symlink_to(character, target_is_directory=True)
    return root


@pytest.mark.slow
def test_your_own_photos_with_no_other_flag_get_the_imagenet_backbone_and_beat_its_linear_probe(shared_dir, tmp_path):
    data = latin_characters(shared_dir, tmp_path / "latin")
    finetuned = run_cli("app.train", "--dataset", "folder", "--data-dir", data, "--out", tmp_path / "finetune", "--quiet")
    assert "backbone: mobilenet_v2 (ImageNet weights" in finetuned.stderr and "warning: only" not in finetuned.stderr
    config = json.loads((tmp_path / "finetune" / "config.json").read_text())
    assert (config["backbone"], config["image_size"], config["bn"], config["lr"], config["head_lr_ratio"]) == ("mobilenet_v2", 96, "frozen", 0.001, 10.0)
    run_cli("app.train", "--dataset", "folder", "--data-dir", data, "--out", tmp_path / "linear", "--strategy", "linear", "--quiet")
    # global-k on the same data and budget (20 epochs in all): exactly k blocks chosen, the compact network trained and shipped.
    run_cli("app.train", "--dataset", "folder", "--data-dir", data, "--out", tmp_path / "global_k", "--strategy", "global_k", "--k", "3",
            "--block-choice", "top_k", "--epochs", "7", "--compact-epochs", "13", "--quiet")

    def metrics(run):
        return json.loads((tmp_path / run / "metrics.json").read_text())

    def correct(run):  # images right on the held-out splits (validation + test: 104 drawings)
        values = metrics(run)
        return sum(round(values["accuracy"][s] * values["images"][s]) for s in ("validation", "test"))

    routing = metrics("global_k")["routing"]
    assert len(routing["finetuned_blocks"]) == 3 and not routing["forced_top_k"]
    assert metrics("global_k")["accuracy"] == routing["compact_accuracy"]  # the compact network is the result
    # Measured on a 2-core AMD EPYC: finetune 95, global_k (compact) 92, linear 83 of 104.
    assert correct("finetune") > correct("linear")
    assert correct("global_k") > correct("linear")


def test_compare_names_no_backbone_and_gets_the_same_default_as_train():
    from app import compare

    parse = compare.build_parser().parse_args
    folder = compare.base_values(parse(["--out", "x", "--dataset", "folder", "--data-dir", "PHOTOS"]))
    assert (folder["backbone"], folder["image_size"]) == ("mobilenet_v2", 96)
    decathlon = compare.base_values(parse(["--out", "x", "--decathlon"]))
    assert decathlon["backbone"] == "mobilenet_v2" and "image_size" not in decathlon  # the tasks keep 72 px
    named = compare.base_values(parse(["--out", "x", "--backbone", "resnet20"]))
    assert named["backbone"] == "resnet20" and "image_size" not in named
    cell = compare.cell_config(folder, compare.parse_methods("lp_ft")[0], 0, 1.0, 3)
    assert (cell.head_lr_ratio, cell.head_epochs, cell.epochs) == (10.0, 6, 20)  # the recipe, and lp_ft's third
