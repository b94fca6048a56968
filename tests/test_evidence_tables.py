"""The evidence tables in docs/evidence are generated from their per-cell CSVs, never typed: each committed
table equals what `python -m app.compare --from-cells CSV` writes from the CSV beside it."""

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EVIDENCE = REPO / "docs" / "evidence"


def test_every_committed_evidence_table_is_what_its_cells_csv_generates():
    from app.compare import table_of_cells

    tables = sorted(EVIDENCE.glob("*.md"))
    assert tables, "docs/evidence holds no generated table"
    for table in tables:
        cells = table.with_suffix(".csv")
        assert cells.is_file(), f"{table.name} has no {cells.name} to be generated from"
        assert table.read_text() == table_of_cells(str(cells)), f"{table.name} differs from what {cells.name} generates: rerun python -m app.compare --from-cells docs/evidence/{cells.name}"


def test_from_cells_writes_the_table_beside_the_csv_and_a_bad_file_is_one_line(tmp_path, capsys):
    from app import compare

    source = sorted(EVIDENCE.glob("*.csv"))[0]
    copy = tmp_path / "cells.csv"
    copy.write_text(source.read_text())
    assert compare.main(["--from-cells", str(copy)]) == 0
    assert (tmp_path / "cells.md").read_text() == compare.table_of_cells(str(source))
    (tmp_path / "bad.csv").write_text("not,a\ncells,file\n")
    with pytest.raises(SystemExit):
        compare.main(["--from-cells", str(tmp_path / "bad.csv")])
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "holds no cells" in error


def test_the_readmes_evidence_tables_are_the_generated_ones():
    import re

    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"<!-- evidence: ([\w.-]+) -->\n(.*?)<!-- /evidence -->", readme, re.S)
    assert blocks, "the README shows no generated evidence table"
    for name, table in blocks:
        assert table == (EVIDENCE / f"{name}.md").read_text(), f"the README's copy of docs/evidence/{name}.md differs from it"
