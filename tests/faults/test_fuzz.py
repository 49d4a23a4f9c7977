"""Fuzzing the two places that read what others wrote: the scoring request path and the CSV
reader. Properties: the server answers every body with 200 or a 4xx whose JSON names a field
(never a 5xx, never a traceback), and the reader either returns checked rows or raises
BadInputError naming the file (never another exception).

Two drivers: a seeded random generator that always runs (deterministic, a few thousand cases),
and Hypothesis (shrinking, when installed: the ``test`` extra) on the same properties.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="serving tests need the serve extra (fastapi)")

from tests.factories import app_client, request_inputs  # noqa: E402

try:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
except ImportError:  # the test extra brings it; the seeded driver still runs
    given = None

needs_hypothesis = pytest.mark.skipif(given is None, reason="hypothesis is not installed (pip install -e '.[test]')")


# ---- the request path -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tiny_root):
    with app_client(tiny_root / "art", max_wait_ms=0, max_candidates=8, max_body_bytes=16 * 1024) as c:
        yield c


@pytest.fixture(scope="module")
def inputs(client) -> dict[str, str]:
    return request_inputs(client)


def _check_answer(r, body: bytes) -> None:
    assert r.status_code == 200 or 400 <= r.status_code < 500, (r.status_code, r.text[:500], body[:300])
    doc = r.json()
    if r.status_code == 200:
        assert all(0.0 <= p <= 1.0 for p in doc["scores"]["click"]), body[:300]
    else:
        assert isinstance(doc["detail"], str) and "Traceback" not in doc["detail"], doc


SPECIAL_NUMBERS = [0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30, 10**300, 0.5, -0.0, 1e-320, 3.4e38, 3.5e38, 1e308,
                   float("inf"), float("-inf"), float("nan"), True, False]
SPECIAL_STRINGS = ["", " ", "7", "null", "\x00", "\ud800", "\udfff", "\U0001f600", "é", "a" * 300, "|", "\n", "\\u0000"]


def _value(rng: random.Random, depth: int = 0):
    k = rng.randrange(10 if depth < 4 else 6)
    if k == 0:
        return None
    if k in (1, 2):
        return rng.choice(SPECIAL_NUMBERS)
    if k in (3, 4):
        return rng.choice(SPECIAL_STRINGS)
    if k == 5:
        return rng.randrange(-5, 200)
    if k in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))]
    if k == 8:
        return {rng.choice(SPECIAL_STRINGS + ["user", "tags"]): _value(rng, depth + 1) for _ in range(rng.randrange(3))}
    return [[[[rng.randrange(9)]]]] * rng.randrange(1, 3)


VALID = {"category": lambda rng: rng.choice([None, 3, "7", "unseen"]),
         "number": lambda rng: rng.choice([None, 0.5, -2, 1e3]),
         "category_list": lambda rng: rng.choice([[], ["1", 2], None]),
         "int_list": lambda rng: rng.choice([[], [1, 2], None])}


def _document(rng: random.Random, inputs: dict[str, str]):
    """A request of valid rows with a few values replaced by random ones (sometimes a key
    dropped, added or moved into the context), or now and then a random JSON value."""
    if rng.random() < 0.05:
        return _value(rng)
    names = list(inputs)
    rows = []
    for _ in range(rng.randrange(0, 4)):
        row = {name: VALID[kind](rng) for name, kind in inputs.items()}
        for _ in range(rng.choice([0, 1, 1, 2])):
            row[rng.choice(names)] = _value(rng)
        if rng.random() < 0.05:
            row.pop(rng.choice(names))
        if rng.random() < 0.05:
            row[rng.choice(SPECIAL_STRINGS) + "x"] = _value(rng)
        rows.append(row)
    doc = {"candidates": rows}
    if rows and rng.random() < 0.3:
        key = rng.choice(names)
        doc["context"] = {key: rows[0].get(key)}
        for r in rows:
            r.pop(key, None)
    for extra in ("model", "model_version", "contexts"):
        if rng.random() < 0.03:
            doc[extra] = _value(rng)
    return doc


def _body(rng: random.Random, inputs: dict[str, str]) -> bytes:
    if rng.random() < 0.02:  # deep nesting, inside a value or as the whole body
        depth = rng.choice([500, 5_000, 15_000])
        return rng.choice([b"[" * depth + b"]" * depth, b'{"candidates": [{"a": ' + b"[" * depth + b"1" + b"]" * depth])
    text = json.dumps(_document(rng, inputs), ensure_ascii=rng.random() < 0.5, allow_nan=True)
    body = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.25:  # byte-level damage: flips, cuts, insertions
        b = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            if not b:
                break
            i = rng.randrange(len(b))
            op = rng.randrange(3)
            if op == 0:
                b[i] = rng.randrange(256)
            elif op == 1:
                del b[i:]
            else:
                b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4)))
        body = bytes(b)
    return body


@pytest.mark.slow  # 2,500 requests (~12 s); test_request_path_hypothesis fuzzes the same path by default
def test_request_path_seeded_fuzz(client, inputs):
    rng = random.Random(20240613)
    ctypes = [None, "application/json", "text/plain", "application/octet-stream", "multipart/form-data"]
    for _ in range(2500):
        body = _body(rng, inputs)
        ctype = rng.choice(ctypes)
        r = client.post("/v1/score", content=body, headers={"content-type": ctype} if ctype else {})
        _check_answer(r, body)
    metrics = client.get("/metrics").text
    assert 'status="5' not in metrics


if given is not None:
    # Any code point, lone surrogates included (JSON's "\ud800" escapes decode to them).
    _text = st.text(st.characters(exclude_categories=()), max_size=20) | st.sampled_from(SPECIAL_STRINGS) \
        | st.characters(categories=["Cs"])
    _json = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | _text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
        max_leaves=12,
    )

    @needs_hypothesis
    @settings(max_examples=600, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(data=st.data())
    def test_request_path_hypothesis(client, inputs, data):
        kind = data.draw(st.sampled_from(["rows", "json", "bytes"]))
        if kind == "bytes":
            body = data.draw(st.binary(max_size=300))
        elif kind == "json":
            body = json.dumps(data.draw(_json), allow_nan=True).encode("utf-8", "surrogatepass")
        else:
            # Valid rows, then one to three values replaced: each example probes a few fields.
            names = list(inputs)
            valid = st.fixed_dictionaries({n: st.sampled_from([None, 3, "7"]) if k == "category" else
                                           st.sampled_from([None, 0.5]) if k == "number" else st.just([])
                                           for n, k in inputs.items()})
            rows = data.draw(st.lists(valid, min_size=1, max_size=3))
            edge = st.sampled_from(SPECIAL_STRINGS + SPECIAL_NUMBERS)  # the values most likely to break things
            for _ in range(data.draw(st.integers(1, 3))):
                row = rows[data.draw(st.integers(0, len(rows) - 1))]
                row[data.draw(st.sampled_from(names + ["extra"]))] = data.draw(edge | _json | st.lists(edge, max_size=3))
            shared = data.draw(st.lists(st.sampled_from(names), max_size=2, unique=True))  # moved to the context
            context = {k: rows[0].get(k) for k in shared}
            doc = {"candidates": [{k: v for k, v in r.items() if k not in shared} for r in rows], "context": context}
            body = json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
        _check_answer(client.post("/v1/score", content=body), body)
else:
    @needs_hypothesis
    def test_request_path_hypothesis():
        pass


# ---- the CSV reader ---------------------------------------------------------------------------


def _source():
    from rankmixer.data.schema import RawColumn, SourceSpec

    return SourceSpec(format="csv", has_header=True, columns=[
        RawColumn(name="id", type="int", required=True), RawColumn(name="x", type="float"),
        RawColumn(name="tag", type="str")])


def _read(tmp: Path, data: bytes, on_bad_row: str):
    """read_raw on ``data``: the checked row count, or None when refused with BadInputError."""
    from rankmixer.data.reader import BadInputError, read_raw

    path = tmp / "in.csv"
    path.write_bytes(data)
    try:
        files, report = read_raw([path], _source(), tmp / "typed", on_bad_row)
    except BadInputError as e:
        assert str(path) in str(e), e  # names the file
        return None
    import pyarrow.parquet as pq

    kept = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    assert kept + report.rows_skipped == report.rows_read, report.to_dict()
    return kept


CSV_PIECES = [b"id,x,tag\n", b"1,2.5,a\n", b"2,,b\n", b"3,nan,c\n", b"x,1,d\n", b"4,1e400,e\n", b"5\n", b"6,1,2,3\n",
              b'7,"1,5",f\n', b'8,1,"unclosed\n', b"\xff\xfe\n", b"\x00,\x00,\x00\n", b"9,-0,\xc3\xa9\n", b"\r\n",
              b"10,1", b"id,tag\n", b"  11 , 3 , g \n", b"12,inf,h\n", b"\n\n"]


@pytest.mark.parametrize("on_bad_row", ["fail", "skip"])
def test_csv_reader_seeded_fuzz(tmp_path, on_bad_row):
    rng = random.Random(7 if on_bad_row == "fail" else 8)
    for i in range(250):
        pieces = [rng.choice(CSV_PIECES) for _ in range(rng.randrange(0, 8))]
        if rng.random() < 0.8:
            pieces.insert(0, CSV_PIECES[0])
        data = b"".join(pieces)
        if rng.random() < 0.2 and data:
            b = bytearray(data)
            b[rng.randrange(len(b))] = rng.randrange(256)
            data = bytes(b)
        case = tmp_path / str(i)
        case.mkdir()
        _read(case, data, on_bad_row)


if given is not None:
    @needs_hypothesis
    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(data=st.one_of(st.binary(max_size=200),
                          st.lists(st.sampled_from(CSV_PIECES), max_size=8).map(lambda p: CSV_PIECES[0] + b"".join(p))),
           on_bad_row=st.sampled_from(["fail", "skip"]))
    def test_csv_reader_hypothesis(tmp_path_factory, data, on_bad_row):
        _read(tmp_path_factory.mktemp("csv"), data, on_bad_row)
else:
    @needs_hypothesis
    def test_csv_reader_hypothesis():
        pass
