"""The session splitter (``BehaviourField.sessions``): each position's session index counted
from the newest, checked against a plain-Python loop on hand-made time gaps, on real Taobao and
MovieLens timestamps, and through preparation into the loaded ``[B, L, F]`` tensor."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from rankmixer.data.behaviour import session_index
from rankmixer.data.schema import FIRST_ID, Schema, SessionSplit
from tests.data.test_behaviours import load, parse, schema_dict, write_splits, TRAIN, by_rid, MAX_LEN
from rankmixer.data.prepare import prepare

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def reference(times: list[float | None], gap: float, max_session_len: int | None, max_sessions: int) -> list[int]:
    """Walk oldest to newest: a new session after a jump of more than ``gap`` or when the
    current one is full; then number the sessions from the newest."""
    session, length, last, out = 0, 0, None, []
    for t in times:
        if t is None:
            t = last  # a missing time continues the session
        new = bool(out) and ((t is not None and last is not None and abs(t - last) > gap)
                             or (max_session_len is not None and length == max_session_len))
        if new:
            session, length = session + 1, 0
        out.append(session)
        length += 1
        last = t
    return [min(session - s, max_sessions - 1) for s in out]


def run(lists: list[list[str | None]], s: SessionSplit) -> list[list[int]]:
    df = pl.DataFrame({"t": lists}, schema={"t": pl.List(pl.Utf8)})
    return df.select(session_index(pl.col("t"), s))["t"].to_list()


CASES = [  # gaps to the request, oldest first (non-increasing)
    ["100", "90", "20", "10", "5", None, "1"],
    [],
    ["5"],
    ["3000", "2990", "2980", "100", "99", "98", "97", "96", "0"],
    [None, None, "50"],
]


@pytest.mark.parametrize("max_session_len", [None, 1, 2, 3])
@pytest.mark.parametrize("max_sessions", [64, 2])
def test_hand_made_gaps(max_session_len, max_sessions):
    s = SessionSplit(of="dt", gap=30, max_session_len=max_session_len, max_sessions=max_sessions)
    got = run(CASES, s)
    for case, g in zip(CASES, got):
        assert g == reference([None if v is None else float(v) for v in case], 30, max_session_len, max_sessions)
    if max_session_len is None and max_sessions == 64:
        assert got[0] == [1, 1, 0, 0, 0, 0, 0] and got[3] == [2, 2, 2, 1, 1, 1, 1, 1, 0]


def _real_histories(times_by_user: dict, n: int = 300) -> list[list[str]]:
    users = sorted(times_by_user)[:n]
    return [[str(t) for t in sorted(times_by_user[u])] for u in users]


@pytest.mark.parametrize("name", ["taobao", "movielens"])
def test_real_timestamps(name):
    """Whole user timelines (timestamps, non-decreasing) from the shared samples: 30-minute
    sessions, capped at 20 behaviours, against the loop."""
    by_user: dict[int, list[int]] = {}
    if name == "taobao":
        path = DATA / "taobao-userbehavior-sample" / "UserBehavior.csv"
        if not path.is_file():
            pytest.skip(f"{path} absent")
        with open(path, newline="") as f:
            for u, _, _, _, t in csv.reader(f):
                by_user.setdefault(int(u), []).append(int(t))
    else:
        path = DATA / "movielens-latest-small" / "ratings.csv"
        if not path.is_file():
            pytest.skip(f"{path} absent")
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                by_user.setdefault(int(r["userId"]), []).append(int(r["timestamp"]))
    lists = _real_histories(by_user)
    s = SessionSplit(of="t", gap=1800, max_session_len=20, max_sessions=32)
    got = run(lists, s)
    n_sessions = []
    for case, g in zip(lists, got):
        assert g == reference([float(v) for v in case], 1800, 20, 32)
        n_sessions.append(g[0] + 1 if g else 0)
    # Real timelines do split: most users have several sessions, and some hit the cap.
    assert np.median(n_sessions) > 1 and max(n_sessions) == 32


def test_prepared_session_field(tmp_path):
    d = schema_dict()
    d["features"][3]["fields"][3]["order"] = "non_increasing"
    d["features"][3]["fields"].append({"name": "session", "sessions": {"of": "dt", "gap": 50, "max_sessions": 8}})
    schema = Schema.model_validate(d)
    assert schema.feature("hist").columns == ["hist_item", "hist_cat", "hist_type", "hist_dt"]
    fm = prepare(schema, write_splits(tmp_path), tmp_path / "p", log=lambda *_: None)
    info = fm.feature("hist").fields[-1]
    assert info.name == "session" and info.vocab_size == FIRST_ID + 8 and "hist__session" in fm.tables()
    h = by_rid(load(fm, "train"))
    for r in parse(TRAIN):
        dts = r["positions"]["dt"]
        # sessions cut on the whole history, then the most recent MAX_LEN positions kept
        want = reference([None if v is None else float(v) for v in dts], 50, None, 8)[-MAX_LEN:]
        got = h[int(r["rid"])][:, -1]
        assert list(got[: len(want)]) == [FIRST_ID + w for w in want], r["rid"]
        assert (got[len(want):] == 0).all()


def test_schema_errors():
    d = schema_dict()
    d["features"][3]["fields"].append({"name": "session", "sessions": {"of": "dt", "gap": 50}})
    with pytest.raises(ValueError, match="must name a numeric field of this behaviour with an order"):
        Schema.model_validate(d)  # dt has no order
    d["features"][3]["fields"][3]["order"] = "non_increasing"
    d["features"][3]["fields"][-1]["source"] = "hist_session"
    with pytest.raises(ValueError, match="takes no"):
        Schema.model_validate(d)
    d["features"][3]["fields"][-1] = {"name": "session", "sessions": {"of": "nope", "gap": 50}}
    with pytest.raises(ValueError, match="sessions.of='nope'"):
        Schema.model_validate(d)
    with pytest.raises(ValueError):
        SessionSplit(of="dt", gap=0)
