"""The headroom scripts' frame (bench/headroom.py): mean and sample sd over draws against the
statistics module, and a file it did not write left untouched."""

from __future__ import annotations

import json
import statistics

import pytest
from pydantic import BaseModel

from rankmixer.bench.headroom import run


class Cfg(BaseModel):
    scale: float = 2.0


def test_report_rows_are_mean_and_sample_sd(tmp_path, capsys):
    values = {11: {"a": 0.61, "b": 0.70}, 12: {"a": 0.65, "b": 0.71}, 13: {"a": 0.60, "b": 0.75}}
    out = tmp_path / "r.json"
    run(out, Cfg(), lambda seed: values[seed], {"users": 5})
    report = json.loads(out.read_text())
    assert report["config"] == {"scale": 2.0} and report["users"] == 5
    assert report["draws"] == [values[s] for s in (11, 12, 13)]
    for row in report["rows"]:
        xs = [values[s][row["features"]] for s in (11, 12, 13)]
        assert row["auc_mean"] == pytest.approx(statistics.mean(xs))
        assert row["auc_sd"] == pytest.approx(statistics.stdev(xs))
    run(out, Cfg(), lambda seed: values[seed], {})  # its own report: replaced


def test_refuses_a_file_it_did_not_write(tmp_path):
    out = tmp_path / "results.json"
    out.write_text('{"cells": []}\n')
    with pytest.raises(SystemExit, match="refusing to overwrite"):
        run(out, Cfg(), lambda seed: {"a": 0.5}, {})
    assert out.read_text() == '{"cells": []}\n'
