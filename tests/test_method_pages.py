"""Code and tests point to the project's own method pages: every page they name exists, and every
registered strategy and regulariser has one listed in docs/methods/README.md."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGE = re.compile(r"docs/methods/([\w-]+\.md)")


def test_every_method_page_named_in_the_code_exists():
    named = {
        (path.relative_to(REPO), page)
        for folder in ("app", "export", "models", "pipelines", "rundir", "bench", "tests")
        for path in (REPO / folder).rglob("*.py")
        for page in PAGE.findall(path.read_text())
    }
    assert named, "no code points to docs/methods"
    missing = sorted(f"{path} names {page}" for path, page in named if not (REPO / "docs" / "methods" / page).is_file())
    assert missing == []
    assert not any("METHODS.md" in path.read_text() for path in (REPO / "models" / "spottune").rglob("*.py"))


def test_every_strategy_and_regularizer_is_in_the_method_index():
    from models.regularizers import REGULARIZERS
    from models.strategies import STRATEGIES

    index = (REPO / "docs" / "methods" / "README.md").read_text()
    for name in list(STRATEGIES) + [r for r in REGULARIZERS if r != "none"]:
        assert re.search(rf"\b{name}\b", index), f"{name} is not in docs/methods/README.md"


def test_every_regularizer_declares_its_needs_and_its_page():
    from models.regularizers import NEEDS, REGISTRY

    for name, regularizer in REGISTRY.items():
        assert set(regularizer.needs) <= set(NEEDS), name
        if name != "none":
            assert (REPO / "docs" / "methods" / regularizer.page).is_file(), name
    assert REGISTRY["l2sp_fisher"].needs == ("w0", "fisher") and REGISTRY["delta"].needs == ("attention",)
