"""The Decathlon score reproduces the published figures: the baseline 2500, SpotTune 3612."""

import pytest

from pipelines.decathlon_score import BASELINE_ACCURACY, decathlon_score, task_score

# SpotTune's published accuracies (Guo et al., CVPR 2019, Table 2).
SPOTTUNE = {
    "imagenet12": 60.32, "aircraft": 63.91, "cifar100": 80.48, "daimlerpedcls": 96.49, "dtd": 57.13,
    "gtsrb": 99.52, "vgg-flowers": 85.22, "omniglot": 88.84, "svhn": 96.72, "ucf101": 52.34,
}


def test_the_baseline_scores_250_per_task_and_2500_in_all():
    for task, accuracy in BASELINE_ACCURACY.items():
        assert task_score(task, accuracy) == pytest.approx(250.0)
    assert decathlon_score(BASELINE_ACCURACY) == pytest.approx(2500.0)


def test_spottune_scores_its_published_3612():
    assert round(decathlon_score(SPOTTUNE)) == 3612


def test_bounds_and_bad_input():
    assert task_score("dtd", 100.0) == pytest.approx(1000.0)
    assert task_score("dtd", 0.0) == 0.0  # twice the baseline error or worse scores nothing
    with pytest.raises(ValueError, match="unknown Decathlon task"):
        task_score("mnist", 90.0)
    with pytest.raises(ValueError, match="percentage"):
        task_score("dtd", 0.9 * 1000)
