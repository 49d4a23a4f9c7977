"""The server never answers 500 to what a client sends: bytes, nesting, encodings, content
types, unknown keys at any level, extreme numbers, a client that goes away mid-body, idle and
slow connections; and an artifact whose manifest does not cover every file is refused."""

from __future__ import annotations

import json
import shutil
import socket
import time

import pytest

pytest.importorskip("fastapi", reason="serving tests need the serve extra (fastapi)")
pytest.importorskip("uvicorn", reason="serving tests need the serve extra (uvicorn)")
httpx = pytest.importorskip("httpx", reason="serving tests need the serve extra (httpx)")

from tests.factories import LiveServer, app_client, request_inputs  # noqa: E402


@pytest.fixture(scope="module")
def client(tiny_root):
    with app_client(tiny_root / "art", max_wait_ms=0, max_candidates=16, max_body_bytes=64 * 1024) as c:
        yield c


@pytest.fixture(scope="module")
def inputs(client) -> dict[str, str]:
    return request_inputs(client)


def _row(inputs, **values):
    return {**{name: None for name in inputs}, **values}


def _assert_refused(r, status: int | None = None, field: str | None = None) -> None:
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()  # valid JSON (and so valid UTF-8), with the field named
    assert isinstance(body["detail"], str) and len(r.content) < 4096
    if status is not None:
        assert r.status_code == status, r.text
    if field is not None:
        assert body["field"] == field, body


def test_bytes_nesting_and_encodings_are_4xx(client, inputs):
    good = json.dumps({"candidates": [_row(inputs)]}).encode()
    cases = [
        (b"\xff\xfe\x00garbage", 400), (b"\x00" * 64, 400), (b"[" * 60_000, 400), (b"{" * 60_000, 400),
        (json.dumps({"candidates": [_row(inputs, tags=[[[[[[[[1]]]]]]]])]}).encode(), 422),
        # Surrogate bytes (CESU-8): Python's JSON reader lets them through; the field check does not.
        ('{"candidates": [{"user": "\udc80"}]}'.encode("utf-8", "surrogatepass"), 422),
        (good[:-7], 400), (b"null", 422), (b'"text"', 422), (b"1" * 5000, 400),
    ]
    for body, status in cases:
        _assert_refused(client.post("/v1/score", content=body), status)
    for ctype in ("text/html; charset=latin-1", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
                  "image/png", "application/json; charset=utf-16", "\x7f"):
        r = client.post("/v1/score", content=good, headers={"content-type": ctype})
        assert r.status_code == 200, (ctype, r.text)  # the body is JSON whatever the label says
        _assert_refused(client.post("/v1/score", content=b"\x89PNG\r\n\x1a\n", headers={"content-type": ctype}), 400)
    _assert_refused(client.post("/v1/score", content=good, headers={"content-encoding": "gzip"}), 415, "body")


def test_lone_surrogates_are_refused_by_field(client, inputs):
    cat = next(n for n, k in inputs.items() if k == "category")
    lst = next(n for n, k in inputs.items() if k == "category_list")
    for cand, field in [(_row(inputs, **{cat: "\ud800"}), f"candidates[0].{cat}"),
                        (_row(inputs, **{lst: ["ok", "\udfff"]}), f"candidates[0].{lst}[1]"),
                        ({**_row(inputs), "\ud83d": 1}, "candidates[0].\\ud83d")]:
        _assert_refused(client.post("/v1/score", content=json.dumps({"candidates": [cand]}).encode()), 422, field)
    _assert_refused(client.post("/v1/score", content=json.dumps({"model": "\udc00", "candidates": [{}]}).encode()), 404)


def test_unknown_keys_inside_context_and_candidates_are_refused(client, inputs):
    for doc, field in [({"context": {"not_a_feature": 1}, "candidates": [_row(inputs)]}, "context.not_a_feature"),
                       ({"candidates": [_row(inputs), {**_row(inputs), "typo_user": 7}]}, "candidates[1].typo_user")]:
        r = client.post("/v1/score", json=doc)
        _assert_refused(r, 422, field)
        assert "unknown feature" in r.json()["detail"]


def test_extreme_numbers_are_refused_not_scored_as_nan(client, inputs):
    num = next(n for n, k in inputs.items() if k == "number")
    cat = next(n for n, k in inputs.items() if k == "category")
    for value in (1e308, -1e300, 10**40, float("inf"), float("nan")):
        body = json.dumps({"candidates": [_row(inputs, **{num: value})]}).encode()
        _assert_refused(client.post("/v1/score", content=body), 422, f"candidates[0].{num}")
    for value in (3.0e38, -3.4e38, 1e-300, 0):  # in range: scored, with finite scores
        r = client.post("/v1/score", json={"candidates": [_row(inputs, **{num: value})]})
        if r.status_code == 200:
            assert all(0.0 <= p <= 1.0 for p in r.json()["scores"]["click"])
        else:
            _assert_refused(r, 422)
    r = client.post("/v1/score", json={"candidates": [_row(inputs, **{cat: 10**300})]})
    assert r.status_code == 200  # a huge integer is just an unseen category
    assert "status=\"500\"" not in client.get("/metrics").text


# ---- connections ------------------------------------------------------------------------------


def _counter(url: str, status: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f'rankmixer_requests_total{{status="{status}"}}'):
            return float(line.split()[-1])
    return 0.0


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False


def test_idle_slow_and_vanishing_clients(tiny_root):
    with LiveServer(tiny_root / "art", header_timeout_s=0.5, body_timeout_s=0.5, idle_timeout_s=0.5) as srv:
        # Connects and sends nothing; then a request head that never completes: both closed.
        with socket.create_connection(("127.0.0.1", srv.port)) as idle:
            assert _closed_within(idle, 10)
        with socket.create_connection(("127.0.0.1", srv.port)) as slow_head:
            slow_head.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\n")
            assert _closed_within(slow_head, 10)
        # A body that stops arriving: 408, and the connection closes.
        with socket.create_connection(("127.0.0.1", srv.port)) as slow_body:
            slow_body.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"cand")
            slow_body.settimeout(10)
            reply = b""
            while chunk := slow_body.recv(4096):
                reply += chunk
            assert reply.startswith(b"HTTP/1.1 408") and b"body" in reply
        # Disconnects mid-body: counted apart (499), never as a server error.
        with socket.create_connection(("127.0.0.1", srv.port)) as gone:
            gone.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"candidates\": [")
            time.sleep(0.1)
        deadline = time.monotonic() + 10
        while _counter(srv.url, "499") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _counter(srv.url, "499") == 1 and _counter(srv.url, "500") == 0
        assert httpx.get(f"{srv.url}/healthz").status_code == 200  # still serving


# ---- artifact manifests -----------------------------------------------------------------------


def _edit_manifest(art, change) -> None:
    m = json.loads((art / "manifest.json").read_text())
    change(m)
    (art / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("case", ["unlisted file", "absolute path", "parent path", "file not listed", "symlink"])
def test_manifest_must_list_every_file_by_relative_path(tiny_root, tmp_path, case):
    from rankmixer.core.files import sha256_file
    from rankmixer.serve.artifact import Artifact, ArtifactError

    art = tmp_path / "art"
    shutil.copytree(tiny_root / "art", art)
    Artifact(art)  # the copy loads
    secret = tmp_path / "secret.txt"
    secret.write_text("not the artifact's")
    if case == "unlisted file":
        (art / "extra.py").write_text("print('hi')")
    elif case == "absolute path":
        _edit_manifest(art, lambda m: m["sha256"].update({str(secret): sha256_file(secret)}))
    elif case == "parent path":
        _edit_manifest(art, lambda m: m["sha256"].update({"../secret.txt": sha256_file(secret)}))
    elif case == "file not listed":
        _edit_manifest(art, lambda m: m["sha256"].pop("preprocess.json"))
    else:
        (art / "preprocess.json").unlink()
        (art / "preprocess.json").symlink_to(secret)
        _edit_manifest(art, lambda m: m["sha256"].update({"preprocess.json": sha256_file(secret)}))
    with pytest.raises(ArtifactError):
        Artifact(art)
