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


def code_strings(path):
    """The string constants of a module's code (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


@pytest.mark.parametrize("package", ["app", "export"])
def test_the_verbs_and_export_name_no_strategy(package):
    # A strategy's knowledge lives in its package; app/ and export/ reach it through the registry:
    # no string constant equal to a strategy name (help texts and examples may mention them).
    from models.strategies import STRATEGIES

    offenders = sorted(
        f"{path.relative_to(REPO)}: {text!r}"
        for path in (REPO / package).rglob("*.py")
        for text in code_strings(path)
        if text in STRATEGIES
    )
    assert offenders == []
