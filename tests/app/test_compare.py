"""python -m app.compare: one run directory per cell, a table of mean ± std over seeds, resumable."""

import csv
import json

import numpy as np
import pytest

from app import compare
from models.errors import ModelConfigError


def test_methods_parse_into_strategies_and_regularisers():
    methods = compare.parse_methods("finetune, linear:lr=0.01,l2sp,spottune+l2sp")
    assert [(m.strategy, m.regularizer) for m in methods] == [
        ("finetune", "none"), ("linear", "none"), ("finetune", "l2sp"), ("spottune", "l2sp"),
    ]
    assert [m.label for m in methods] == ["finetune", "linear:lr=0.01", "l2sp", "spottune+l2sp"]
    # A method's own settings win over the shared ones, and over the backbone's recipe.
    base = {"backbone": "mobilenet_v2", "lr": 0.002, "extra": {}}
    assert compare.cell_config(base, methods[1], 0, 1.0, 3).lr == 0.01
    assert compare.cell_config(base, methods[0], 0, 1.0, 3).lr == 0.002
    assert compare.cell_config({"backbone": "mobilenet_v2", "extra": {}}, methods[0], 0, 1.0, 3).lr == 0.001
    tau = compare.cell_config(base, compare.parse_methods("spottune:tau=1")[0], 2, 0.1, 3)
    assert tau.extra["tau"] == 1 and tau.extra["train_fraction"] == 0.1 and tau.seed == 2
    with pytest.raises(ModelConfigError, match="unknown method 'adamw'") as info:
        compare.parse_methods("finetune,adamw")
    assert "\n" not in str(info.value)


def test_summary_is_the_mean_and_sample_std_over_seeds():
    rows = [
        {"task": None, "method": "finetune", "fraction": 1.0, "seed": s, "split": "test", "accuracy": a,
         "trainable_parameters": 10, "images_per_second": 100.0 + s, "exported_bytes": 4096}
        for s, a in enumerate([0.8, 0.9, 0.7])
    ]
    (line,) = compare.summarise(rows)
    assert line["seeds"] == 3 and line["accuracy_mean"] == pytest.approx(0.8)
    assert line["accuracy_std"] == pytest.approx(np.std([0.8, 0.9, 0.7], ddof=1))
    assert "| finetune | 1 | 3 | 80.00 ± 10.00 | test | - |" in compare.markdown([line])
    for row, validation in zip(rows, [0.7, 0.75, 0.8]):
        row["validation"] = validation
    (line,) = compare.summarise(rows)
    assert line["validation_mean"] == pytest.approx(0.75) and line["validation_std"] == pytest.approx(0.05)
    assert "| test | 75.00 ± 5.00 |" in compare.markdown([line])
    rows[0]["validation"] = None  # one cell without validation: no column value rather than a mean of fewer seeds
    assert compare.summarise(rows)[0]["validation_mean"] is None


def test_validation_sits_beside_the_test_accuracy_only_when_test_is_the_score():
    assert compare.validation_beside({"accuracy": {"test": 0.8, "validation": 0.7}}, "test") == 0.7
    assert compare.validation_beside({"accuracy": {"validation": 0.7}}, "validation") is None
    assert compare.validation_beside({"accuracy": {"test": 0.8}}, "test") is None


def test_decathlon_scores_are_computed_per_method_from_mean_accuracies():
    from pipelines.decathlon_score import BASELINE_ACCURACY

    lines = [{"task": t, "method": "baseline", "accuracy_mean": a / 100} for t, a in BASELINE_ACCURACY.items()]
    lines += [{"task": "dtd", "method": "perfect", "accuracy_mean": 1.0}]
    scores = compare.decathlon_lines(lines)
    assert scores["baseline"][0] == pytest.approx(2500.0) and len(scores["baseline"][1]) == 10
    assert scores["perfect"] == (pytest.approx(1000.0), ["dtd"])


@pytest.mark.slow
def test_compare_writes_the_table_and_a_rerun_trains_nothing(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["--methods", "finetune,linear", "--seeds", "0,1", "--fractions", "0.2", "--epochs", "1",
            "--out", str(out), "--quiet", "--backbone", "resnet20", "--image-size", "16"]
    assert compare.main(argv) == 0
    first = capsys.readouterr().out
    assert first.count("(trained)") == 4
    with open(out / "results.csv") as f:
        lines = list(csv.DictReader(f))
    assert [line["method"] for line in lines] == ["finetune", "linear"]
    for line in lines:
        cells = [json.loads((out / "cells" / f"{line['method']}-f0.2-s{s}" / "metrics.json").read_text()) for s in (0, 1)]
        accuracies = [c["accuracy"]["test"] for c in cells]
        assert float(line["accuracy_mean"]) == pytest.approx(np.mean(accuracies))
        assert float(line["accuracy_std"]) == pytest.approx(np.std(accuracies, ddof=1))
        assert int(line["trainable_parameters"]) == cells[0]["trainable_parameters"]
        assert cells[0]["images"]["train"] < 0.25 * 1435  # the 0.2 fraction of the embedded training split
    with open(out / "cells.csv") as f:
        cells = {(row["method"], int(row["seed"])): row for row in csv.DictReader(f)}
    assert sorted(cells) == [("finetune", 0), ("finetune", 1), ("linear", 0), ("linear", 1)]
    for (method, seed), row in cells.items():
        metrics = json.loads((out / "cells" / f"{method}-f0.2-s{seed}" / "metrics.json").read_text())
        assert float(row["accuracy"]) == metrics["accuracy"]["test"] and row["split"] == "test"
        assert float(row["validation"]) == metrics["accuracy"]["validation"]
        assert float(row["train_accuracy_last_epoch"]) == metrics["history"]["accuracy"][-1]  # has training levelled off?
    linear, finetune = (int(l["trainable_parameters"]) for l in sorted(lines, key=lambda l: l["method"] != "linear"))
    assert linear < finetune
    assert (out / "results.png").stat().st_size > 1000 and "| finetune |" in (out / "results.md").read_text()
    # A second run reads every finished cell and rewrites the same table.
    assert compare.main(argv) == 0
    second = capsys.readouterr().out
    assert second.count("(done before)") == 4 and "(trained)" not in second
    assert (out / "results.md").read_text().strip() in second
    # --table-only trains nothing: a third seed is listed as missing and the table keeps two seeds.
    assert compare.main([*argv[:3], "0,1,2", *argv[4:], "--table-only"]) == 0
    third = capsys.readouterr().out
    assert "(trained)" not in third and "left out of the table: 2 cells" in third
    assert "| finetune | 0.2 | 2 |" in third
