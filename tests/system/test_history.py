"""The job history file: round trip, appends, and files it must not touch."""

from __future__ import annotations

import polars as pl
import pytest

from rankmixer.system.history import HistoryError, append_records, read_history
from rankmixer.system.measure import record_of


def _rec(i: int, status: str = "ok") -> dict:
    result = {"status": status, "samples_per_s": 100.0 + i, "peak_rss_mb": 50.0, "params": 7} if status == "ok" \
        else {"status": "failed", "reason": "memory: resident 900 MB passed the limit of 500 MB"}
    return record_of({"model_size": "small", "batch_size": 512 * (i + 1), "threads": "all"}, result, "random", 1.5)


def test_round_trip_and_append(tmp_path):
    path = tmp_path / "h" / "history.parquet"
    assert read_history(path) == []
    assert append_records(path, [_rec(0), _rec(1, "failed")]) == 2
    assert append_records(path, [_rec(2)]) == 3
    rows = read_history(path)
    assert [r["setting"]["batch_size"] for r in rows] == [512, 1024, 1536]
    assert rows[1]["status"] == "failed" and rows[1]["reason"].startswith("memory") and rows[1]["samples_per_s"] is None
    assert rows[0]["hardware"]["cpus"] >= 1 and rows[0]["fingerprint"] == rows[2]["fingerprint"]
    assert rows[0]["setting"]["threads"] == "all"  # mixed-type knob values survive


def test_a_file_that_is_not_a_history_is_left_alone(tmp_path):
    other = tmp_path / "data.parquet"
    pl.DataFrame({"a": [1, 2]}).write_parquet(other)
    before = other.read_bytes()
    with pytest.raises(HistoryError, match="not a tune-system history"):
        append_records(other, [_rec(0)])
    with pytest.raises(HistoryError, match="not a tune-system history"):
        read_history(other)
    assert other.read_bytes() == before
    junk = tmp_path / "junk.parquet"
    junk.write_text("not parquet")
    with pytest.raises(HistoryError, match="not a readable Parquet file"):
        append_records(junk, [_rec(0)])
    assert junk.read_text() == "not parquet"
