"""bench.input_memory on the smallest case: fresh processes, one epoch each, the table's rows and ratios."""

import re

import pytest

from bench import input_memory


def test_memory_is_read_from_proc_and_bad_counts_stop_in_one_line(tmp_path):
    rss, hwm = input_memory.memory_kib()
    assert 0 < rss <= hwm
    with pytest.raises(SystemExit, match="--counts"):
        input_memory.parse_counts("1000,lots")
    with pytest.raises(SystemExit, match="--caches"):
        input_memory.main(["--caches", "sometimes"])
    root = input_memory.write_jpegs(str(tmp_path / "data"), 12, 3, 16)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["class_00", "class_01", "class_02"]
    assert sum(1 for _ in (tmp_path / "data").rglob("*.jpg")) == 12 and root == str(tmp_path / "data")


@pytest.mark.slow
def test_a_tiny_run_prints_one_row_per_count_and_the_growth_ratio(capsys):
    assert input_memory.main(["--counts", "20,60", "--caches", "off", "--side", "16", "--image-size", "16", "--classes", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d+\s+\d+\s+off\s", line)]
    assert [(row[0], row[2]) for row in rows] == [("20", "off"), ("60", "off")]
    for row in rows:
        train, load, epoch, peak = int(row[1]), float(row[3]), float(row[4]), float(row[5])
        assert 0 < train < int(row[0]) and load >= 0 and epoch >= 0 and peak > 100  # TensorFlow alone is > 100 MiB
    assert re.search(r"60 / 20 images \(goal: epoch growth flat, at most 1\.5x\):", out)
    assert re.search(r"cache off\s+epoch growth \d+\.\d+x \((met|NOT met)\), load growth \d+\.\d+x, peak RSS \d+\.\d+x", out)
