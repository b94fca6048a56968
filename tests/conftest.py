"""Shared fixtures: paths to the real data beside the repository, and a quiet TensorFlow."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the tests read real data from ../shared beside the repository")
    return SHARED


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the dataset-statistics cache of each test session out of the user's home."""
    monkeypatch.setenv("ADAPTUNE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
