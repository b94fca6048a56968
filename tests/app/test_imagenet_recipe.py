"""The fine-tuning recipe of the ImageNet MobileNets, end to end on real photographs.

Full fine-tuning from MobileNetV2 with the recipe (`--bn frozen --lr 0.001`, applied because no flag
says otherwise) must learn clothing-small; with the learning rate that collapsed it (0.01) it must not
reach that level. The README's table has the 128 px figures; this is the same at 64 px on 30 % of the
training images, 3 epochs, small enough for CI.
"""

import json

import pytest

from tests.app.helpers import run_cli

COMMON = ["--backbone", "mobilenet_v2", "--dataset", "folder", "--image-size", "64", "--epochs", "3",
          "--train-fraction", "0.3", "--eval-splits", "test", "--quiet"]


@pytest.mark.slow
def test_finetune_from_mobilenet_v2_learns_with_the_recipe_and_not_without(tmp_path, shared_dir):
    data = ["--data-dir", str(shared_dir / "data" / "clothing-small")]
    run_cli("app.train", *COMMON, *data, "--out", tmp_path / "recipe")
    recipe = json.loads((tmp_path / "recipe" / "metrics.json").read_text())
    config = json.loads((tmp_path / "recipe" / "config.json").read_text())
    assert (config["bn"], config["lr"]) == ("frozen", 0.001)  # recorded, so --resume rebuilds the same run
    run_cli("app.train", *COMMON, *data, "--lr", "0.01", "--out", tmp_path / "high-lr")
    high = json.loads((tmp_path / "high-lr" / "metrics.json").read_text())
    # Learned, not collapsed: one class is 0.14 on this test split. The figure depends on the CPU's kernels
    # (measured 0.543 on a 2-core AMD EPYC; above 0.6 on the Intel Xeon), so the floor sits well below both.
    assert recipe["accuracy"]["test"] > 0.45, recipe["accuracy"]
    assert recipe["accuracy"]["test"] > high["accuracy"]["test"] + 0.15, (recipe["accuracy"], high["accuracy"])
