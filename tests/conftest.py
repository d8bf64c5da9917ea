from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Unit tests never touch the user's cache, except the shared one set up for integration tests."""
    if "CML_CACHE_DIR" not in os.environ:
        monkeypatch.setenv("CML_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cml-cache"))


def needs_shared_data():
    return pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not present")


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory):
    """A tiny random BERT with a word-level tokenizer, saved as a Hugging Face folder (built in seconds)."""
    from tiny import build_tiny_backbone

    return build_tiny_backbone(tmp_path_factory.mktemp("tiny-bert"))
