"""Behaviour sequences in a scoring request: checked per field and encoded exactly as preparation
encodes the same raw values (the hand-computed reference of tests/data/test_behaviours.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rankmixer.data.prepare import prepare
from rankmixer.data.schema import OOV_ID, Schema
from rankmixer.serve.preprocess import CATEGORY_POSITIONS, NUMBER_POSITIONS, Preprocessor, RowError, build_spec
from tests.data.test_behaviours import FIELDS, TEST, TRAIN, VALID, expected, parse, schema_dict, write_splits


@pytest.fixture(scope="module")
def pre(tmp_path_factory) -> Preprocessor:
    tmp = tmp_path_factory.mktemp("beh")
    schema = Schema.model_validate(schema_dict())
    fm = prepare(schema, write_splits(tmp), tmp / "p", log=lambda *_: None)
    return Preprocessor(build_spec(fm, schema), fm)


def request_row(rec: dict) -> dict:
    """A raw CSV record as a client sends it: lists per field, numbers as JSON numbers."""
    row = {k: rec[k] for k in ("user", "item", "cat")}
    for f in FIELDS:
        values = rec["positions"][f]
        if f == "dt":
            values = [None if v is None else (int(v) if v.isdigit() else float(v)) for v in values]
        row[f"hist_{f}"] = values
    return row


def test_inputs_are_declared_per_field(pre):
    kinds = {i.name: i.kind for i in pre.inputs}
    assert kinds["hist_item"] == CATEGORY_POSITIONS and kinds["hist_dt"] == NUMBER_POSITIONS
    assert "hist" in pre.oov_features


def test_request_rows_encode_like_preparation(pre):
    recs = parse(TRAIN + VALID + TEST)
    rows = [pre.check_row(request_row(r), f"rows[{i}]") for i, r in enumerate(recs)]
    arrays, oov = pre.encode(rows)
    want = expected(recs, parse(TRAIN))
    for i, r in enumerate(recs):
        np.testing.assert_array_equal(arrays["beh:hist"][i], want[int(r["rid"])], err_msg=f"rid={r['rid']}")
    k = pre.oov_features.index("hist")
    np.testing.assert_array_equal(oov[:, k], [(want[int(r["rid"])] == OOV_ID).sum() for r in recs])
    # A null history is an empty one.
    empty = dict(request_row(recs[0]), **{f"hist_{f}": None for f in FIELDS})
    arrays, _ = pre.encode([pre.check_row(empty, "r")])
    assert (arrays["beh:hist"] == 0).all()


@pytest.mark.parametrize("change, field, message", [
    ({"hist_cat": ["c1"]}, "r.hist_cat", "1 values, but hist_item has 2"),
    ({"hist_dt": [5, -1]}, "r.hist_dt[1]", "non-negative"),
    ({"hist_dt": [5, "7"]}, "r.hist_dt[1]", "expected a number"),
    ({"hist_type": "view|buy"}, "r.hist_type", "expected an array"),
    ({"hist_item": ["i1", 2.5]}, "r.hist_item[1]", "expected a string or an integer"),
])
def test_bad_behaviours_are_refused_naming_the_field(pre, change, field, message):
    row = {"user": "u1", "item": "i1", "cat": "c1", "hist_item": ["i1", None], "hist_cat": ["c1", "c2"],
           "hist_type": ["view", "buy"], "hist_dt": [5, 1]}
    pre.check_row(row, "r")  # the unchanged row is fine (a null position included)
    with pytest.raises(RowError) as e:
        pre.check_row({**row, **change}, "r")
    assert e.value.field == field and message in e.value.message


def test_out_of_order_gaps_are_refused_when_the_schema_orders_them(tmp_path):
    d = schema_dict()
    d["features"][3]["fields"][3]["order"] = "non_increasing"
    schema = Schema.model_validate(d)
    fm = prepare(schema, write_splits(tmp_path), tmp_path / "p", log=lambda *_: None)
    pre = Preprocessor(build_spec(fm, schema), fm)
    row = {"user": "u1", "item": "i1", "cat": "c1", "hist_item": ["i1", "i2", "i3"], "hist_cat": ["c1", "c2", "c1"],
           "hist_type": ["view", "buy", "view"], "hist_dt": [9, None, 4]}
    pre.check_row(row, "r")  # sorted (a missing gap is skipped)
    with pytest.raises(RowError) as e:
        pre.check_row({**row, "hist_dt": [9, None, 12]}, "r")
    assert e.value.field == "r.hist_dt" and "must not increase" in e.value.message
