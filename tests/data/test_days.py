"""Day partitions of the training split (schema ``days``), checked against a groupby of the raw
rows; the synthetic set's timestamps against its own day law."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from rankmixer.data.datasets.base import RawFiles
from rankmixer.data.datasets.synthetic.config import SyntheticConfig
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.data.prepare import prepare
from rankmixer.data.reader import BadInputError
from rankmixer.data.schema import Schema

DAY = 1000  # seconds in a "day" of the hand-made logs


def _schema(**over) -> Schema:
    d = {
        "name": "days",
        "source": {"format": "csv", "columns": [
            {"name": "click", "type": "int", "required": True}, {"name": "user", "type": "str"},
            {"name": "item", "type": "int"}, {"name": "ts", "type": "int"}]},
        "labels": [{"name": "click"}],
        "features": [{"name": "user", "type": "categorical"}, {"name": "item", "type": "categorical"}],
        "time_column": "ts",
        "days": {"seconds": DAY, "offset": 300},
        "split": {"method": "files"},
    }
    d.update(over)
    return Schema.model_validate(d)


def _log(path: Path, ts: np.ndarray, seed: int = 0) -> Path:
    """Rows in the given (unsorted) time order; ``item`` is the row's position in the file."""
    rng = np.random.default_rng(seed)
    lines = ["click,user,item,ts"] + [f"{int(rng.random() < 0.3)},u{rng.integers(0, 9)},{i},{t}"
                                       for i, t in enumerate(ts)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_training_rows_land_in_their_day_sorted_by_time(tmp_path):
    rng = np.random.default_rng(3)
    ts = rng.integers(0, 6 * DAY, 500)  # out of order, several days, the offset moves the boundary
    ts[:3] = [DAY - 300, DAY - 301, 5 * DAY + 700 - 1]  # rows on either side of a boundary
    raw = _log(tmp_path / "train.csv", ts)
    other = _log(tmp_path / "other.csv", np.arange(10) + 7 * DAY, seed=1)
    fm = prepare(_schema(), RawFiles(by_split={"train": [raw], "valid": [other], "test": [other]}),
                 tmp_path / "p", log=lambda *_: None)
    expected_day = (ts + 300) // DAY
    days = sorted(set(expected_day.tolist()))
    assert [d.day for d in fm.days] == days
    for info in fm.days:
        rows = pl.read_parquet(fm.day_files(info.day))
        want = np.flatnonzero(expected_day == info.day)
        assert info.rows == len(want) == rows.height
        assert sorted(rows["__ts"].to_list()) == rows["__ts"].to_list()  # sorted by time
        assert sorted(rows["__ts"].to_list()) == sorted(ts[want].tolist())  # exactly the day's rows
    assert fm.splits["train"].files == [f for d in fm.days for f in d.files]
    assert fm.splits["train"].rows == len(ts)
    # The loader reads one day: exactly its rows.
    loaded = np.concatenate([b.timestamp.numpy() for b in make_loader(
        ParquetBatches(fm, "train", 64, shuffle=True, seed=1, day=days[1]))])
    assert sorted(loaded.tolist()) == sorted(ts[expected_day == days[1]].tolist())


def test_days_need_a_time_column_and_a_time_on_every_row(tmp_path):
    with pytest.raises(ValueError, match="days .*needs time_column"):
        _schema(time_column=None)
    raw = tmp_path / "train.csv"
    raw.write_text("click,user,item,ts\n1,u1,1,5\n0,u2,2,\n1,u3,3,2500\n")
    with pytest.raises(BadInputError, match="1 row.* without a value in the time column"):
        prepare(_schema(), RawFiles(by_split={"train": [raw], "valid": [raw], "test": [raw]}), tmp_path / "p",
                log=lambda *_: None)
    good = _log(tmp_path / "t.csv", np.arange(5) * 700)
    fm = prepare(_schema(), RawFiles(by_split={"train": [good], "valid": [good], "test": [good]}), tmp_path / "q",
                 log=lambda *_: None)
    with pytest.raises(ValueError, match="day partitions are of the train split"):
        ParquetBatches(fm, "valid", 4, day=0)
    with pytest.raises(KeyError, match="day 9 is not in the prepared training split"):
        ParquetBatches(fm, "train", 4, day=9)


def test_synthetic_timestamps_follow_the_day_law():
    cfg = SyntheticConfig(rows_train=1000, rows_valid=70, rows_test=70, days=3, timestamps=True)
    ts = cfg.row_times("train", 0, 1000)
    assert np.array_equal(ts // 86_400, cfg.row_days("train", 0, 1000))
    assert (np.diff(ts) >= 0).all() and ts[0] == 0 and ts[-1] < 3 * 86_400
    valid = cfg.row_times("valid", 10, 60)
    assert (valid // 86_400 == 3).all()  # valid and test: the day after training
    shard = SyntheticConfig(rows_train=1000, days=3, train_day=1, timestamps=True).row_times("train", 0, 333)
    assert (shard // 86_400 == 1).all()
