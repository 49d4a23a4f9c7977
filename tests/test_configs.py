"""Every experiment YAML validates, and each side-by-side pair (``<ds>_<model>.yaml`` vs
``<ds>_fuxictr_<model>.yaml``) differs in the model section only: same data, split, seed and
training budget, so a difference in results is a difference in model code."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rankmixer.config import load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
PAIRS = [(p.with_name(p.name.replace("_fuxictr_", "_")), p) for p in CONFIGS
         if "_fuxictr_" in p.name and p.with_name(p.name.replace("_fuxictr_", "_")).exists()]


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_validates(path):
    load_config(path)


def test_there_are_side_by_side_pairs():
    names = {p.name for _, p in PAIRS}
    assert {"movielens_fuxictr_dcnv2.yaml", "movielens_fuxictr_deepfm.yaml"} <= names


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=[t.name for _, t in PAIRS])
def test_pair_differs_in_model_only(ours, theirs):
    a, b = yaml.safe_load(ours.read_text()), yaml.safe_load(theirs.read_text())
    assert b["model"]["name"] == "fuxictr-" + a["model"]["name"]
    for key in set(a) | set(b):
        if key != "model":
            assert a.get(key) == b.get(key), f"{theirs.name}: section {key!r} differs from {ours.name}"
    assert a["model"]["embedding_dim"] == b["model"]["embedding_dim"]
