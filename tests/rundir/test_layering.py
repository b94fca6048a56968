"""The house's arrows: `export/` and `rundir/` sit below the verbs and never import `app/`."""

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def imported_packages(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package, forbidden", [("export", {"app"}), ("rundir", {"app", "export"}), ("models", {"app", "export", "rundir", "pipelines"})])
def test_lower_packages_do_not_import_the_ones_above(package, forbidden):
    offenders = sorted(
        f"{path.relative_to(REPO)} imports {name}"
        for path in (REPO / package).rglob("*.py")
        for name in imported_packages(path)
        if name in forbidden
    )
    assert offenders == []
