"""Behaviour histories through the real HTTP server (uvicorn on a loopback port, httpx client).

References: the run's PyTorch model on the prepared test rows through the training loader (for
full histories, and with every history emptied to pad ids), never the server's own output.
The raw rows carry up to 12 behaviours and the model keeps the last 8, so the parity test also
checks that a long history keeps its most recent positions, as preparation does.
"""

from __future__ import annotations

import asyncio
import json
import random

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="serving tests need the serve extra (fastapi)")
pytest.importorskip("uvicorn", reason="serving tests need the serve extra (uvicorn)")
httpx = pytest.importorskip("httpx", reason="serving tests need the serve extra (httpx)")

from tests.factories import LiveServer  # noqa: E402
from tests.serve.behaviour_run import (  # noqa: E402
    HIST,
    MAX_LEN,
    din_artifact,
    empty_history_scores,
    offline_scores,
    raw_test_rows,
)


def _formats() -> list:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return ["eager", pytest.param("onnx", marks=pytest.mark.skip(reason="needs the onnx extra"))]
    return ["eager", pytest.param("onnx", marks=pytest.mark.slow)]  # ~9 s: trains and exports


def _request(row: dict, history_in_context: bool = True) -> dict:
    """One row as a request: the user (and, by default, the history) in the context, the
    candidate item in the candidate."""
    ctx_keys = ["user"] + (HIST if history_in_context else [])
    return {"context": {k: row[k] for k in ctx_keys},
            "candidates": [{k: v for k, v in row.items() if k not in ctx_keys}]}


def _post(url: str, body) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/v1/score", content=content, headers={"content-type": "application/json"}, timeout=60)


@pytest.fixture(scope="module")
def server():
    with LiveServer(din_artifact("eager"), max_wait_ms=5) as s:
        yield s


@pytest.mark.parametrize("fmt", _formats())
def test_served_scores_equal_the_offline_model(fmt):
    """Every raw test row, sent with its full raw history (longer than max_len on some rows),
    scores as the PyTorch model scores the prepared row; half the rows carry the history in the
    candidate instead of the context; the rows arrive concurrently (micro-batched together)."""
    rows = raw_test_rows()
    assert max(len(r["hist_item"]) for r in rows) > MAX_LEN  # truncation is exercised
    ref = offline_scores()
    with LiveServer(din_artifact(fmt), max_wait_ms=5) as s:
        assert httpx.get(f"{s.url}/readyz").json()["format"] == fmt

        async def run():
            async with httpx.AsyncClient(base_url=s.url, timeout=60) as client:
                sem = asyncio.Semaphore(16)

                async def one(i: int):
                    async with sem:
                        return await client.post("/v1/score", json=_request(rows[i], i % 2 == 0))

                return await asyncio.gather(*(one(i) for i in range(len(rows))))

        answers = asyncio.run(run())
    for i, r in enumerate(answers):
        assert r.status_code == 200, (i, r.text)
    got = np.array([r.json()["scores"]["click"][0] for r in answers])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)


def test_a_long_history_keeps_its_most_recent_positions(server):
    """Positions before the last max_len are dropped: junk there (unseen items) changes
    neither the score nor the OOV count of the request."""
    rows = raw_test_rows()
    i = next(k for k, r in enumerate(rows) if len(r["hist_item"]) >= MAX_LEN)
    row = rows[i]
    older = {"hist_item": ["never-seen"] * 5, "hist_cat": ["nope"] * 5, "hist_type": ["0"] * 5,
             "hist_dt": [10**6 + row["hist_dt"][0]] * 5 if row["hist_dt"] else [10**6] * 5}
    long = dict(row, **{c: older[c] + row[c] for c in HIST})
    short, longer = _post(server.url, _request(row)), _post(server.url, _request(long))
    assert short.status_code == longer.status_code == 200, longer.text
    assert longer.json()["scores"] == short.json()["scores"]
    assert longer.json()["oov"] == short.json()["oov"]
    assert short.json()["scores"]["click"][0] == pytest.approx(offline_scores()[i], abs=1e-5)


@pytest.mark.parametrize("how", ["left out", "null", "[]"])
def test_an_empty_history_is_valid(server, how):
    """No history, however sent, scores as the model does with an all-pad history."""
    rows = raw_test_rows()[:10]
    ref = empty_history_scores()[:10]
    for i, row in enumerate(rows):
        body = _request(row)
        for c in HIST:
            if how == "left out":
                del body["context"][c]
            else:
                body["context"][c] = None if how == "null" else []
        r = _post(server.url, body)
        assert r.status_code == 200, r.text
        assert r.json()["scores"]["click"][0] == pytest.approx(ref[i], abs=1e-5), i


def _bad_cases() -> list[tuple[str, dict, str]]:
    """(case, request, the start of the error detail: the request row and field, then what is wrong)."""
    rows = raw_test_rows()
    row = next(r for r in rows if len(r["hist_item"]) >= 3)
    n = len(row["hist_item"])
    cases = []

    def case(name: str, detail: str, in_context: bool = True, candidates: int = 1, **change):
        body = _request(row, in_context)
        if not in_context:
            body["candidates"] = [dict(body["candidates"][0]) for _ in range(candidates)]
            target = body["candidates"][-1]
        else:
            target = body["context"]
        for k, v in change.items():
            if v is ...:
                del target[k]
            else:
                target[k] = v
        cases.append((name, body, detail))

    case("fewer categories than items", f"context.hist_cat: {n - 1} values, but hist_item has {n}",
         hist_cat=row["hist_cat"][:-1])
    # Left out everywhere: named in the row it is missing from (context + candidate = candidates[0]).
    case("one field left out", f"candidates[0].hist_dt: left out (no values), but hist_item has {n}", hist_dt=...)
    case("one field null", f"context.hist_type: 0 values, but hist_item has {n}", hist_type=None)
    case("mismatch in the third candidate", f"candidates[2].hist_type: {n + 1} values, but hist_item has {n}",
         in_context=False, candidates=3, hist_type=row["hist_type"] + ["0"])
    case("negative gap", "context.hist_dt[1]: expected a non-negative number",
         hist_dt=[row["hist_dt"][0], -1] + row["hist_dt"][2:])
    case("negative gap in a candidate", "candidates[1].hist_dt[0]: expected a non-negative number",
         in_context=False, candidates=2, hist_dt=[-5] + row["hist_dt"][1:])
    case("gaps out of order", "context.hist_dt: values must not increase",
         hist_dt=sorted(row["hist_dt"]) if sorted(row["hist_dt"]) != row["hist_dt"] else [0] * (n - 1) + [9])
    case("history as a string", "context.hist_item: expected an array, got string",
         hist_item="|".join(row["hist_item"]))
    case("history as an object", "context.hist_cat: expected an array, got object", hist_cat={"0": "1"})
    case("a float item", "context.hist_item[0]: expected a string or an integer (a category), got number 1.5",
         hist_item=[1.5] + row["hist_item"][1:])
    case("a nested array", "context.hist_type[1]: expected a string or an integer (a category), got array",
         hist_type=[row["hist_type"][0], ["0"]] + row["hist_type"][2:])
    case("a gap as a string", "context.hist_dt[0]: expected a number, got string",
         hist_dt=[str(row["hist_dt"][0])] + row["hist_dt"][1:])
    case("a boolean gap", "context.hist_dt[2]: expected a number, got boolean",
         hist_dt=row["hist_dt"][:2] + [True] + row["hist_dt"][3:])
    case("a huge gap", "context.hist_dt[0]: number out of range", hist_dt=[1e300] + row["hist_dt"][1:])
    return cases


def test_bad_histories_get_a_4xx_naming_the_row_and_field(server):
    for name, body, detail in _bad_cases():
        r = _post(server.url, body)
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert r.json()["detail"].startswith(detail), (name, r.json())
        assert r.json()["field"] == detail.split(":")[0], (name, r.json())
    # NaN (Python's JSON reader accepts it): refused by field, not a 500.
    one = {"hist_item": ["1"], "hist_cat": ["1"], "hist_type": ["0"], "hist_dt": [12345.5]}
    body = json.dumps(_request(dict(raw_test_rows()[0], **one))).replace("12345.5", "NaN")
    r = _post(server.url, body.encode())
    assert r.status_code == 422 and r.json()["detail"].startswith("context.hist_dt[0]: expected a finite number"), \
        r.text


def test_good_and_bad_history_requests_under_load(server):
    """24 concurrent clients, good behaviour requests interleaved with bad ones: every good one
    gets the offline score, every bad one its 4xx, none a 500."""
    rows = raw_test_rows()
    ref = offline_scores()
    bad = _bad_cases()
    plan = [("good", i) for i in range(len(rows))] + [("bad", k) for k in range(len(bad)) for _ in range(3)]
    random.Random(0).shuffle(plan)

    async def run():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            sem = asyncio.Semaphore(24)

            async def one(kind: str, i: int):
                body = _request(rows[i], i % 3 != 0) if kind == "good" else bad[i][1]
                async with sem:
                    r = await client.post("/v1/score", json=body)
                return kind, i, r.status_code, r.json()

            return await asyncio.gather(*(one(k, i) for k, i in plan))

    for kind, i, status, body in asyncio.run(run()):
        if kind == "good":
            assert status == 200, body
            assert body["scores"]["click"][0] == pytest.approx(ref[i], abs=1e-5)
        else:
            assert status == 422 and body["detail"].startswith(bad[i][2]), (bad[i][0], body)
