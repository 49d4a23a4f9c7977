"""Fixtures shared by the model tests."""

from __future__ import annotations

import json

import pytest

from rankmixer import experiment
from rankmixer.config import load_config


@pytest.fixture(scope="session")
def behaviour_data(tmp_path_factory):
    """A tiny synthetic behaviour set (300 training rows, histories up to 12 of 4 fields: item,
    cat, type, dt), prepared once: its feature map."""
    root = tmp_path_factory.mktemp("behaviour")
    opts = {"rows_train": 300, "rows_valid": 100, "rows_test": 100, "n_users": 50, "n_items": 120,
            "n_categories": 8, "seq_len_max": 12, "return_period": 6, "attention_window": 4}
    cfg = load_config(None, ["data.dataset=behaviour", f"data.preset_options={json.dumps(opts)}",
                             f"data.prepared_dir={root / 'prep'}", f"run_dir={root / 'run'}"])
    return experiment.prepare_data(cfg.data, log=lambda m: None)
