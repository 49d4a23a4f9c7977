"""The scoring server, as a real uvicorn server on a loopback port, driven by a real HTTP client.

References: the run's PyTorch model on the prepared test rows (scores), the request counts the
test itself sent (metrics), and the exact OOV values it planted.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="serving tests need the serve extra (fastapi)")
pytest.importorskip("uvicorn", reason="serving tests need the serve extra (uvicorn)")
httpx = pytest.importorskip("httpx", reason="serving tests need the serve extra (httpx)")
pytest.importorskip("aiohttp", reason="serving tests need the serve extra (aiohttp, the load generator's client)")

from tests.factories import LiveServer, artifact, canonical_test_rows, movielens_run, prepared_dir  # noqa: E402

CONTEXT = ["user_id", "hour", "weekday", "hist_movies", "hist_genres"]


def _format() -> str:
    try:
        import onnxruntime  # noqa: F401

        return "onnx"
    except ImportError:
        return "eager"


def _request(rows: list[dict], **extra) -> dict:
    ctx = {k: rows[0][k] for k in CONTEXT}
    return {"context": ctx, "candidates": [{k: v for k, v in r.items() if k not in CONTEXT} for r in rows], **extra}


def _reference_scores(rows: list[dict]) -> np.ndarray:
    """PyTorch scores of the rows with the first row's context (user, time, history), as
    ``_request`` sends them."""
    import torch

    from rankmixer.runs import load_run

    art = _artifact_obj()
    ctx = {k: rows[0][k] for k in CONTEXT}
    checked = [art.preprocessor.check_row({**r, **ctx}, "r") for r in rows]
    arrays, _ = art.preprocessor.encode(checked)
    from rankmixer.data.batch import Batch

    model = load_run(movielens_run()).model
    t = torch.from_numpy
    batch = Batch(dense=t(arrays["dense"]), sparse=t(arrays["sparse"]), labels=t(arrays["labels"]),
                  bags={k[4:]: t(v) for k, v in arrays.items() if k.startswith("bag:")},
                  sequences={k[4:]: t(v) for k, v in arrays.items() if k.startswith("seq:")})
    with torch.no_grad():
        return torch.sigmoid(model(batch).logits).numpy()[:, 0]


_ART = {}


def _artifact_obj():
    from rankmixer.serve.artifact import Artifact

    if "a" not in _ART:
        _ART["a"] = Artifact(artifact("eager"))
    return _ART["a"]


@pytest.fixture(scope="module")
def server():
    with LiveServer(artifact(_format()), max_candidates=64, max_body_bytes=256 * 1024, max_wait_ms=5) as s:
        yield s


def _oov_reference(rows: list[dict]) -> dict[str, int]:
    """OOV values per feature by a plain loop over the vocabularies in preprocess.json: a value
    is OOV when missing or not in its table's vocabulary (MovieLens has no hashed features).
    Bags keep their first max_len values, sequences their last, as preparation does."""
    art = _artifact_obj()
    spec = art.preprocessor.spec
    vocab = {t: set(v["values"]) for t, v in spec["vocabularies"].items()}
    out = {}
    for f in art.fm.features:
        n = 0
        for r in rows:
            v = r[f.name]
            if f.kind == "sparse":
                n += v is None or str(v) not in vocab[f.table]
            else:
                vals = v[: f.max_len] if f.kind == "bag" else v[-f.max_len:]
                n += sum(str(x) not in vocab[f.table] for x in vals)
        out[f.name] = n
    return out


def _metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.split()[-1])
    return 0.0


def test_health_ready_openapi(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz").json()
    assert ready["status"] == "ready" and ready["model"] == "rankmixer-tiny"
    spec = httpx.get(f"{server.url}/openapi.json").json()
    body = spec["paths"]["/v1/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "candidates" in body["properties"] and "context" in body["properties"]
    assert "ScoreResponse" in json.dumps(spec["paths"]["/v1/score"]["post"]["responses"]["200"])
    info = httpx.get(f"{server.url}/v1/model").json()
    assert {i["name"] for i in info["request_inputs"]} == {
        "user_id", "movie_id", "genres", "release_year", "hour", "weekday", "hist_movies", "hist_genres"}


def test_scores_match_pytorch(server):
    rows, _ = canonical_test_rows()
    cands = rows[:40]
    r = httpx.post(f"{server.url}/v1/score", json=_request(cands))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["tasks"] == ["like"] and len(out["scores"]["like"]) == 40
    np.testing.assert_allclose(out["scores"]["like"], _reference_scores(cands), rtol=0, atol=1e-5)


def _bad_cases(rows: list[dict], version: str) -> list[tuple[str, bytes | dict, int, str]]:
    """(case, body, expected status, text the message must contain: the field)."""
    good = _request(rows[:3])
    missing = json.loads(json.dumps(good))
    del missing["candidates"][1]["movie_id"]
    wrong = json.loads(json.dumps(good))
    wrong["candidates"][2]["movie_id"] = 1.5
    wrong_list = json.loads(json.dumps(good))
    wrong_list["context"]["hist_movies"] = "1|2|3"
    clash = json.loads(json.dumps(good))
    clash["candidates"][0]["user_id"] = 5
    return [
        ("malformed JSON", b'{"candidates": [{"movie_id": 1,}]}', 400, "body: malformed JSON"),
        ("empty body", b"", 400, "body: empty"),
        ("not an object", b"[1, 2]", 422, "body: expected a JSON object"),
        ("missing feature", missing, 422, "candidates[1].movie_id: missing feature"),
        ("wrong type", wrong, 422, "candidates[2].movie_id: expected a string or an integer (a category), got number 1.5"),
        ("wrong list type", wrong_list, 422, "context.hist_movies: expected an array"),
        ("NaN", json.dumps(good).replace('"hour": ' + json.dumps(good["context"]["hour"]), '"hour": NaN').encode(),
         422, "context.hour: expected a string or an integer (a category), got number nan"),
        ("context clash", clash, 422, "candidates[0].user_id: also given in context"),
        ("no candidates", {"context": {}, "candidates": []}, 422, "candidates: List should have at least 1 item"),
        ("unknown key", {**good, "candidate": []}, 422, "candidate: Extra inputs are not permitted"),
        ("too many rows", _request(rows[:1] * 65), 413, "candidates: 65 rows in one request; the limit is 64"),
        ("oversized body", _request(rows[:1]) | {"context": {**good["context"], "hist_genres": ["x" * 300_000]}},
         413, "body: request body is"),
        ("unknown model version", {**good, "model_version": "v0-nope"}, 404, "model_version: 'v0-nope' is not served"),
        ("unknown model", {**good, "model": "dcnv2"}, 404, "model: 'dcnv2' is not served"),
    ] + [("version ok", {**good, "model_version": version}, 200, "")]


def test_every_bad_input_gets_a_4xx_naming_the_field(server):
    rows, _ = canonical_test_rows()
    version = httpx.get(f"{server.url}/readyz").json()["model_version"]
    for case, body, status, text in _bad_cases(rows, version):
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(f"{server.url}/v1/score", content=content, headers={"content-type": "application/json"})
        assert r.status_code == status, (case, r.text)
        if status != 200:
            assert text in r.json()["detail"], (case, r.json())
    # A chunked body (no Content-Length) past the limit is cut off too.
    big = json.dumps(_request(rows[:1]) | {"pad": "x" * 300_000}).encode()
    r = httpx.post(f"{server.url}/v1/score", content=(big[i : i + 65536] for i in range(0, len(big), 65536)))
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_unknown_categories_go_oov_and_are_counted(server):
    rows, _ = canonical_test_rows()
    before = httpx.get(f"{server.url}/metrics").text
    req = _request(rows[:4])
    req["candidates"][0]["movie_id"] = 10**9
    req["candidates"][1]["movie_id"] = "never-seen"
    req["candidates"][2]["genres"] = ["Comedy", "Not A Genre", "Nor This"]
    r = httpx.post(f"{server.url}/v1/score", json=req)
    assert r.status_code == 200, r.text
    expect = _oov_reference([{**req["context"], **c} for c in req["candidates"]])
    got = r.json()["oov"]
    assert got["movie_id"] == expect["movie_id"] >= 2 and got["genres"] == expect["genres"] >= 2
    assert {f: n for f, n in expect.items() if n} == got
    after = httpx.get(f"{server.url}/metrics").text
    for f in ("movie_id", "genres"):
        lab = f'{{feature="{f}"}}'
        assert _metric(after, "rankmixer_oov_values_total", lab) - _metric(before, "rankmixer_oov_values_total", lab) \
            == got[f]


def test_mixed_good_and_bad_load_zero_failed_good_requests(server):
    """Concurrent clients send good and bad requests interleaved: every good one is scored
    (and scored right), every bad one gets its 4xx, and the metrics count exactly that."""
    rows, _ = canonical_test_rows()
    version = httpx.get(f"{server.url}/readyz").json()["model_version"]
    bad = [c for c in _bad_cases(rows, version) if c[2] != 200]
    rng = random.Random(0)
    good = []
    for _ in range(12):
        lo = rng.randrange(0, 550)
        n = rng.randrange(1, 40)
        good.append((rows[lo : lo + n], _reference_scores(rows[lo : lo + n])))
    plan = [("good", i) for i in range(len(good)) for _ in range(10)] + [("bad", i) for i in range(len(bad))
                                                                         for _ in range(4)]
    rng.shuffle(plan)
    before = httpx.get(f"{server.url}/metrics").text

    async def run():
        results = []
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            sem = asyncio.Semaphore(24)

            async def one(kind, i):
                async with sem:
                    if kind == "good":
                        body = json.dumps(_request(good[i][0])).encode()
                    else:
                        b = bad[i][1]
                        body = b if isinstance(b, bytes) else json.dumps(b).encode()
                    r = await client.post("/v1/score", content=body, headers={"content-type": "application/json"})
                    results.append((kind, i, r.status_code, r.json()))

            await asyncio.gather(*(one(k, i) for k, i in plan))
        return results

    results = asyncio.run(run())
    assert len(results) == len(plan)
    for kind, i, status, body in results:
        if kind == "good":
            assert status == 200, body
            np.testing.assert_allclose(body["scores"]["like"], good[i][1], rtol=0, atol=1e-5)
        else:
            assert status == bad[i][2] and bad[i][3] in body["detail"], (bad[i][0], body)
    after = httpx.get(f"{server.url}/metrics").text
    n_good = sum(1 for k, _ in plan if k == "good")
    assert _metric(after, "rankmixer_requests_total", '{status="200"}') - \
        _metric(before, "rankmixer_requests_total", '{status="200"}') == n_good
    n422 = sum(1 for k, i in plan if k == "bad" and bad[i][2] == 422)
    assert _metric(after, "rankmixer_requests_total", '{status="422"}') - \
        _metric(before, "rankmixer_requests_total", '{status="422"}') == n422
    # Micro-batching happened: some model call carried several requests.
    reqs = _metric(after, "rankmixer_batch_requests_sum") - _metric(before, "rankmixer_batch_requests_sum")
    calls = _metric(after, "rankmixer_batch_requests_count") - _metric(before, "rankmixer_batch_requests_count")
    assert reqs == n_good and calls < n_good
    assert _metric(after, "rankmixer_request_latency_seconds_count") > 0 and "rankmixer_qps" in after


def test_failed_artifact_is_not_ready(tmp_path):
    bad = tmp_path / "art"
    shutil.copytree(artifact("eager"), bad)
    (bad / "model.safetensors").write_bytes(b"broken")
    with LiveServer(bad) as s:
        r = httpx.get(f"{s.url}/readyz")
        assert r.status_code == 503 and "sha256" in r.json()["detail"]
        assert httpx.get(f"{s.url}/healthz").status_code == 200
        r = httpx.post(f"{s.url}/v1/score", json={"candidates": [{}]})
        assert r.status_code == 503


def test_bench_serve_short_run(server):
    from rankmixer.bench.serve import run_serve_bench

    rep = run_serve_bench(model=artifact(_format()), url=server.url, prepared=prepared_dir(), concurrency=[1, 4],
                          requests=24, duration=20, candidates=8, warmup=4, log=lambda m: None)
    assert [lv["concurrency"] for lv in rep["levels"]] == [1, 4]
    for lv in rep["levels"]:
        assert lv["requests"] == 24 and lv["error_rate"] == 0.0
        assert lv["p50_ms"] <= lv["p95_ms"] <= lv["p99_ms"]
