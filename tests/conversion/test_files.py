"""``rankmixer conversion fit-delays`` / ``interpolate`` on small hand-made files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from rankmixer.cli import app
from rankmixer.conversion.files import interpolate_files, read_log
from rankmixer.conversion.interpolate import WindowOutOfRange
from rankmixer.data.datasets.conversions.log import ConversionLogError

SAMPLE = Path(__file__).parents[1] / "data" / "conversion_logs" / "criteo_sample.txt"
RATES = {"format": "rankmixer-delay-rates/1", "prior_conversions": 5.0,
         "global": {"rate_per_day": 0.5, "p": 0.1, "clicks": 10, "conversions": 1},
         "advertisers": {"a": {"rate_per_day": math.log(2), "rate_mle": math.log(2), "p": 0.1, "clicks": 5,
                               "conversions": 1}}}


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=300)


def test_fit_delays_on_the_criteo_sample(tmp_path):
    out = tmp_path / "rates.json"
    res = _invoke("conversion", "fit-delays", str(SAMPLE), "--format", "criteo", "--advertiser", "C1",
                  "--out", str(out))
    assert res.exit_code == 0, res.output
    rates = json.loads(out.read_text())
    assert rates["global"]["clicks"] == 5 and rates["global"]["conversions"] == 2
    assert set(rates["advertisers"]) == {"adv1", "adv2", "(missing)"}
    assert rates["advertisers"]["adv1"]["conversions"] == 2
    res = _invoke("conversion", "fit-delays", str(SAMPLE), "--format", "criteo", "--out", str(SAMPLE))
    assert res.exit_code == 2 and "--out" in res.output  # never overwrites its input


def test_read_log_checks_rows(tmp_path):
    path = tmp_path / "log.parquet"
    pl.DataFrame({"click_ts": [10, 20], "conv_ts": [None, 5], "observed_until": [100, 100],
                  "advertiser": ["a", "b"]}).write_parquet(path)
    with pytest.raises(ConversionLogError, match=r"log.parquet: line/row 2: conversion before its click"):
        read_log([path])
    pl.DataFrame({"click_ts": [10]}).write_parquet(path)
    with pytest.raises(ValueError, match=r"missing conversion-log column\(s\) \['conv_ts'"):
        read_log([path])


def _files(tmp_path: Path, windows=None):
    pl.DataFrame({"conversion_prob": [0.1, 0.2], "conversion": [0, 0]}).write_parquet(tmp_path / "s.parquet")
    pl.DataFrame({"conversion_prob": [0.4, 0.3], "conversion": [0, 0]}).write_parquet(tmp_path / "l.parquet")
    clicks = {"advertiser": ["a", "unseen"]}
    if windows:
        clicks["window_days"] = windows
    pl.DataFrame(clicks).write_csv(tmp_path / "clicks.csv")


def test_interpolate_files_by_hand(tmp_path):
    _files(tmp_path, windows=[2.0, 3.0])
    out = interpolate_files(tmp_path / "s.parquet", tmp_path / "l.parquet", tmp_path / "clicks.csv", RATES,
                            tmp_path / "out.csv", short_days=1, long_days=3)
    # advertiser a: beta = ln 2, window 2 -> alpha 2/3; unseen: global rate, window 3 = T_l -> alpha 1
    assert out["alpha"].to_list() == pytest.approx([2 / 3, 1.0])
    assert out["conversion_prob"].to_list() == pytest.approx([0.1 + 2 / 3 * 0.3, 0.3])
    assert pl.read_csv(tmp_path / "out.csv")["conversion_prob"].to_list() == pytest.approx([0.3, 0.3])
    with pytest.raises(ValueError, match="exists; pass --overwrite"):
        interpolate_files(tmp_path / "s.parquet", tmp_path / "l.parquet", tmp_path / "clicks.csv", RATES,
                          tmp_path / "out.csv", short_days=1, long_days=3)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_interpolate_replaces_only_its_own_output(tmp_path, suffix):
    """With --overwrite an earlier output is replaced; a file the command did not write is not,
    even with --overwrite (its first line, or its Parquet metadata, says whose it is)."""
    _files(tmp_path, windows=[2.0, 3.0])
    args = (tmp_path / "s.parquet", tmp_path / "l.parquet", tmp_path / "clicks.csv", RATES)
    ours = tmp_path / f"ours{suffix}"
    interpolate_files(*args, ours, short_days=1, long_days=3)
    interpolate_files(*args, ours, short_days=1, long_days=3, overwrite=True)
    foreign = tmp_path / f"notes{suffix}"
    frame = pl.DataFrame({"a": [1]})
    frame.write_csv(foreign) if suffix == ".csv" else frame.write_parquet(foreign)
    with pytest.raises(ValueError, match="not written by rankmixer"):
        interpolate_files(*args, foreign, short_days=1, long_days=3, overwrite=True)
    assert (pl.read_csv(foreign) if suffix == ".csv" else pl.read_parquet(foreign))["a"].to_list() == [1]


def test_interpolate_refuses_windows_outside_the_trained_ones(tmp_path):
    _files(tmp_path, windows=[2.0, 9.0])
    with pytest.raises(WindowOutOfRange, match=r"window 9 days is outside the trained windows \[1, 3\]"):
        interpolate_files(tmp_path / "s.parquet", tmp_path / "l.parquet", tmp_path / "clicks.csv", RATES,
                          tmp_path / "out.parquet", short_days=1, long_days=3)
    (tmp_path / "rates.json").write_text(json.dumps(RATES))
    res = _invoke("conversion", "interpolate", "--short", str(tmp_path / "s.parquet"), "--long",
                  str(tmp_path / "l.parquet"), "--clicks", str(tmp_path / "clicks.csv"), "--rates",
                  str(tmp_path / "rates.json"), "--short-days", "1", "--long-days", "3", "--window-days", "0.5",
                  "--output", str(tmp_path / "out.parquet"))
    assert res.exit_code == 2 and "window 0.5 days is outside the trained windows [1.0, 3.0]" in res.output
    assert not (tmp_path / "out.parquet").exists()
