"""FitNets, L2T-ww and Hybrid Forward through `python -m app.compare` as a user runs them: every loss
term in metrics.json and TensorBoard, L2T-ww's "where" heatmap, and only the student in model.keras."""

import os

import pytest

from tests.app.helpers import read_json, run_cli

pytestmark = pytest.mark.slow


def test_the_three_methods_join_compare_and_log_their_terms(tmp_path):
    out = tmp_path / "compare"
    run_cli(
        "app.compare", "--backbone", "resnet20", "--image-size", "16", "--batch-size", "32", "--epochs", "1",
        "--fractions", "0.05", "--set", "eval_splits=validation",
        "--methods", "fitnets,l2t_ww:source_backbone=resnet20:source_weights=none:l2t_pairs=same,hybrid_forward",
        "--quiet", "--out", out,
    )
    cells = out / "cells"
    plain_parameters = None
    for cell, terms in (
        ("fitnets", ["hint", "val_hint"]),
        ("l2t_ww_source_backbone=resnet20_source_weights=none_l2t_pairs=same", ["l2t_ww", "meta_loss", "where_1-1", "where_3-3"]),
        ("hybrid_forward", ["student_ce", "hybrid_sts", "hybrid_tst", "hybrid_weight", "val_hybrid_sts"]),
    ):
        directory = next(cells.glob(f"{cell.split('_source')[0]}*-f0.05-s0"))
        metrics = read_json(directory / "metrics.json")
        assert set(terms) <= set(metrics["history"]), (cell, sorted(metrics["history"]))
        assert os.listdir(directory / "logs" / "train")  # TensorBoard epoch logs
        # the exported network is the student alone: a plain ResNet-20 classifier
        plain_parameters = plain_parameters or metrics["total_parameters"]
        assert metrics["total_parameters"] == plain_parameters
    l2t = next(cells.glob("l2t_ww*"))
    table = read_json(l2t / "metrics.json")["l2t_ww"]
    assert table["pairs"] == ["1-1", "2-2", "3-3"] and len(table["where"]) == 3
    assert (l2t / "where_heatmap.png").stat().st_size > 0
    assert os.listdir(l2t / "logs" / "where")
    assert "val_meta_loss" not in read_json(l2t / "metrics.json")["history"]
