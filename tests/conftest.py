"""Fixtures only; the factories they use live in ``tests/factories.py``."""

from __future__ import annotations

import os

import pytest
import torch

from rankmixer.data.feature_map import FeatureMap
from tests.factories import make_feature_map


@pytest.fixture(autouse=True, scope="session")
def system_history(tmp_path_factory):
    """Measured-auto timings (rankmixer.system.auto) go to a history of the test session, never
    to the user's ~/.cache."""
    before = os.environ.get("RANKMIXER_SYSTEM_HISTORY")
    path = tmp_path_factory.mktemp("system") / "history.parquet"
    os.environ["RANKMIXER_SYSTEM_HISTORY"] = str(path)
    yield path
    if before is None:
        os.environ.pop("RANKMIXER_SYSTEM_HISTORY", None)
    else:
        os.environ["RANKMIXER_SYSTEM_HISTORY"] = before


@pytest.fixture
def tiny_feature_map() -> FeatureMap:
    return make_feature_map()


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


@pytest.fixture
def single_thread():
    """Run a test with one intra-op thread: the tensors in unit tests are tiny, and with the
    default thread pool a busy 2-core machine (other test runs beside this one) makes small ops
    10-30x slower through oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
