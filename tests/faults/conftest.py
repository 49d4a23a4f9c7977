"""Fixtures of the fault-injection suite (builders in tests/factories.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.factories import tiny_config


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """A finished tiny run (``run``), its prepared data (``prep``) and an eager artifact
    (``art``). Tests copy what they damage."""
    from rankmixer import experiment
    from rankmixer.serve.export import export_run

    root = tmp_path_factory.mktemp("faults")
    experiment.train(tiny_config(root), log=lambda m: None)
    export_run(root / "run", "eager", root / "art", log=lambda m: None)
    return root


@pytest.fixture
def tiny_copy(tiny_root, tmp_path) -> Path:
    """A private copy of the tiny run and artifact (the run's config still points at the
    shared prepared data, which is only read)."""
    for name in ("run", "art"):
        shutil.copytree(tiny_root / name, tmp_path / name)
    return tmp_path
