"""python -m app.evaluate on a pretrained backbone with its own source classifier."""

import re

import pytest

from tests.app.helpers import REPO, run_cli

CIFAR_SAMPLE = REPO.parent / "shared" / "data" / "cifar10-sample" / "test"


def _overall_accuracy(stdout):
    match = re.search(r"^\s+all\s+(\d+)\s+([0-9.]+)$", stdout, re.MULTILINE)
    assert match, stdout
    return int(match.group(1)), float(match.group(2))


@pytest.mark.parametrize("backbone", ["resnet20", pytest.param("resnet56", marks=pytest.mark.slow)])
def test_pretrained_cifar_resnet_classifies_the_cifar_sample(backbone):
    result = run_cli("app.evaluate", "--backbone", backbone, "--dataset", "folder", "--data-dir", CIFAR_SAMPLE)
    images, accuracy = _overall_accuracy(result.stdout)
    assert images == 2000
    assert accuracy >= 0.75, result.stdout  # measured 0.81 (ResNet-20), 0.83 (ResNet-56) on the 10,000 JPEG test images; a wrong import gives ~0.10


def test_backbone_without_source_classifier_is_a_one_line_error():
    result = run_cli("app.evaluate", "--backbone", "squeezenet1_1", "--dataset", "folder", "--data-dir", CIFAR_SAMPLE, check=False)
    assert result.returncode == 2
    assert "no source classifier" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_of_a_missing_run_is_a_one_line_error(tmp_path):
    result = run_cli("app.evaluate", "--run", tmp_path / "nope", check=False)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
