"""``rankmixer bench serve`` on a model with behaviours: request bodies decoded from the prepared
test split encode back to exactly the prepared ids (checked against the Parquet columns, padded
by hand), bucketized gaps are decoded inside their buckets and in order (checked with the log
bucket formula written here), and the load generator runs against a live DIN server, from the
library and from the CLI, reporting the payload sizes."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

pytest.importorskip("fastapi", reason="serving tests need the serve extra (fastapi)")
pytest.importorskip("uvicorn", reason="serving tests need the serve extra (uvicorn)")
pytest.importorskip("httpx", reason="serving tests need the serve extra (httpx)")
pytest.importorskip("aiohttp", reason="the load generator needs aiohttp (serve extra)")

from rankmixer.bench.serve_requests import (  # noqa: E402
    bucket_values,
    log_bucket_intervals,
    payload_stats,
    real_requests,
)
from tests.factories import LiveServer  # noqa: E402
from tests.serve.behaviour_run import FIELDS, HIST, MAX_LEN, din_artifact, prepared  # noqa: E402


def log_bucket(v: float) -> int:
    """The Criteo log bucket, as docs/data.md states it: floor(ln(v)^2) for v > 2, else floor(v)."""
    return math.floor(math.log(v) ** 2) if v > 2 else math.floor(v)


def intervals_of(b: int):
    return log_bucket_intervals(b)


@pytest.mark.parametrize("raw", [
    [900.0, 120.0, 40.0, 5.0, 3.0, 2.5, 2.0, 1.5, 0.0],  # through the region where buckets 0-2 repeat
    [3.0, 2.0],  # buckets 1 then 2: the smallest values would increase; the order is kept anyway
    [7.5, 7.5, 7.5, 1.0],
    [10**7, 10**6, 10**5, 10**4],
])
def test_log_buckets_decode_inside_their_bucket_and_in_order(raw):
    buckets = [log_bucket(v) for v in raw]
    got = bucket_values([intervals_of(b) for b in buckets], "non_increasing")
    assert [log_bucket(v) for v in got] == buckets
    assert all(a >= b for a, b in zip(got, got[1:])), got
    # Unordered: each value on its own, still in its bucket; an unknown bucket stays null.
    free = bucket_values([intervals_of(b) for b in buckets] + [None], None)
    assert [log_bucket(v) for v in free[:-1]] == buckets and free[-1] is None


def test_decoded_requests_encode_to_the_prepared_ids():
    """One row per request (every test row): the server's encoder, fed the decoded bodies,
    reproduces the prepared split's ids: categorical features and every history position."""
    from rankmixer.data.feature_map import GROUP_COLUMN, FeatureMap
    from rankmixer.serve.artifact import Artifact

    art = Artifact(din_artifact("eager"))
    bodies = real_requests(din_artifact("eager"), prepared(), candidates=1, limit=10**6)
    fm = FeatureMap.load(prepared())
    df = pl.read_parquet(fm.split_files("test"))
    df = df[np.argsort(df[GROUP_COLUMN].to_numpy(), kind="stable").tolist()]  # the bodies' order: by user
    assert len(bodies) == df.height
    assert set(bodies[0]["context"]) == {"user", *HIST}  # the user group: user and history
    rows = [{**b["context"], **b["candidates"][0]} for b in bodies]
    arrays, _ = art.preprocessor.encode([art.preprocessor.check_row(r, f"rows[{i}]") for i, r in enumerate(rows)])
    for k, name in enumerate(art.preprocessor.columns.sparse):
        np.testing.assert_array_equal(arrays["sparse"][:, k], df[name].to_numpy(), err_msg=name)
    want = np.zeros((df.height, MAX_LEN, len(FIELDS)), dtype=np.int64)
    for i in range(df.height):
        for j, f in enumerate(FIELDS):
            ids = df[f"hist__{f}"][i].to_list()
            want[i, : len(ids), j] = ids
    np.testing.assert_array_equal(arrays["beh:hist"], want)
    # Each request carries its row's own length (what preparation kept), some longer than a few.
    lengths = [len(r["hist_item"]) for r in rows]
    assert lengths == df["hist"].to_list() and max(lengths) == MAX_LEN


def test_payload_stats_measure_the_bodies():
    bodies = real_requests(din_artifact("eager"), prepared(), candidates=4, limit=20)
    encoded = [json.dumps(b).encode() for b in bodies]
    spec = json.loads((din_artifact("eager") / "preprocess.json").read_text())
    p = payload_stats(bodies, encoded, spec)
    sizes = [len(e) for e in encoded]
    assert p["requests"] == len(bodies) == 20 and p["bytes_max"] == max(sizes)
    assert p["bytes_mean"] == pytest.approx(sum(sizes) / len(sizes))
    lengths = [len(b["context"]["hist_item"]) for b in bodies]  # the history rides in the context
    assert p["behaviours"]["hist"]["positions_mean"] == pytest.approx(np.mean(lengths))
    assert p["behaviours"]["hist"]["positions_max"] == max(lengths) and p["behaviours"]["hist"]["max_len"] == MAX_LEN


def test_bench_serve_runs_on_a_behaviour_model(tmp_path):
    """The load generator against a live DIN server: no errors, payload sizes in the report,
    and the CLI writes it as JSON."""
    from typer.testing import CliRunner

    from rankmixer.bench.serve import run_serve_bench
    from rankmixer.cli import app

    with LiveServer(din_artifact("eager"), max_wait_ms=5) as s:
        rep = run_serve_bench(model=din_artifact("eager"), url=s.url, prepared=prepared(), concurrency=[1, 4],
                              requests=16, duration=20, candidates=4, warmup=4, log=lambda m: None)
        assert [lv["error_rate"] for lv in rep["levels"]] == [0.0, 0.0]
        assert all(lv["requests"] == 16 and lv["sent_bytes"] > 16 * 100 for lv in rep["levels"])
        assert rep["payload"]["behaviours"]["hist"]["positions_mean"] > 0
        out = tmp_path / "serve.json"
        res = CliRunner().invoke(app, ["bench", "serve", "--model", str(din_artifact("eager")), "--url", s.url,
                                       "--prepared", str(prepared()), "--concurrency", "2", "--requests", "8",
                                       "--candidates", "4", "--json-out", str(out)], terminal_width=300)
        assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["payload"]["bytes_mean"] > 0 and report["levels"][0]["error_rate"] == 0.0
    assert "hist" in report["payload"]["behaviours"]
