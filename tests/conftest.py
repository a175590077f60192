"""Shared fixtures: every test gets its own PYRITE_HOME; logic tests use the deterministic hash embedder."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

from pyrite.config import load_settings
from pyrite.core import Pyrite

PYRITE_ENV = [name for name in os.environ if name.startswith("PYRITE_")]


@pytest.fixture(autouse=True)
def pyrite_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home per test; the hash embedder unless a test asks for another provider."""
    for name in PYRITE_ENV:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    monkeypatch.setenv("PYRITE_HOME", str(home))
    monkeypatch.setenv("PYRITE_EMBED_PROVIDER", "hash")
    # The tests before issue 13 were written for slug file names; tests of title names (the default for
    # new KBs) unset this (see tests/test_tree.py).
    monkeypatch.setenv("PYRITE_KB_NAMES", "slug")
    return home


@pytest.fixture
def core(pyrite_home: Path) -> Iterator[Pyrite]:
    """A Pyrite core on the test's home with one KB called 'notes'."""
    p = Pyrite(load_settings())
    p.kbs.create_kb("notes")
    yield p
    p.close()


@pytest.fixture
def local_core(pyrite_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pyrite]:
    """Like core, but embedding with the real local model (all-MiniLM-L6-v2)."""
    monkeypatch.setenv("PYRITE_EMBED_PROVIDER", "local")
    p = Pyrite(load_settings())
    p.kbs.create_kb("notes")
    yield p
    p.close()


def pyrite_cmd(*args: str) -> list[str]:
    """argv that runs the pyrite CLI of this checkout in a subprocess."""
    return [sys.executable, "-m", "pyrite", *args]
