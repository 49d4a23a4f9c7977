"""Behaviour sequences: schema validation, preparation with bad input, and the loaded tensors.

The expected tensors are computed here from the raw text with plain Python loops (vocabulary
counts, Criteo log buckets, truncation, padding), not with the library's encoder."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch

from rankmixer.data.batch import Batch
from rankmixer.data.datasets.base import RawFiles
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.loader import ParquetBatches
from rankmixer.data.prepare import prepare
from rankmixer.data.reader import BadInputError
from rankmixer.data.schema import OOV_ID, Schema

HEADER = "rid,click,user,item,cat,hist_item,hist_cat,hist_type,hist_dt"
TRAIN = [
    "1,1,u1,i1,c1,i2|i3|i1|i4,c2|c1|c1|c2,view|click|view|buy,500|100|30|2",
    "2,0,u2,i2,c2,,,,",  # empty history
    "3,1,u1,i3,c1,i1,c1,view,0",
    "4,0,u3,i1,c1,i5||i2,c3||c2,click||view,1000||1",  # values missing at the middle position
    "5,1,u2,i4,c2,i2|i2,c2|c2,buy|buy,7|3",
    "6,0,u1,i1,c1,i1|i3|i5|i1,c1|c1|c3|c1,view|view|view|click,9|8|4|2.5",
]
VALID = [
    "7,0,u1,i9,c9,i9|i1,c9|c1,share|view,5|1",  # unseen item, category and type -> OOV
    "8,1,u3,i2,c2,,,,",
]
TEST = ["9,0,u2,i1,c1,i3,c1,view,20"]
MAX_LEN = 3
FIELDS = ("item", "cat", "type", "dt")


def schema_dict(**over) -> dict:
    d = {
        "name": "beh",
        "source": {"format": "csv", "columns": [
            {"name": "rid", "type": "int"}, {"name": "click", "type": "int", "required": True},
            {"name": "user"}, {"name": "item"}, {"name": "cat"},
            {"name": "hist_item"}, {"name": "hist_cat"}, {"name": "hist_type"}, {"name": "hist_dt"},
        ]},
        "labels": [{"name": "click"}],
        "features": [
            {"name": "user", "type": "categorical"},
            {"name": "item", "type": "categorical"},
            {"name": "cat", "type": "categorical"},
            {"name": "hist", "type": "behaviour", "max_len": MAX_LEN, "fields": [
                {"name": "item", "source": "hist_item", "share_with": "item"},
                {"name": "cat", "share_with": "cat"},  # source defaults to hist_cat
                {"name": "type", "source": "hist_type"},
                {"name": "dt", "source": "hist_dt", "bucketize": {"method": "log"}},
            ]},
        ],
        "group_key": "rid",
        "split": {"method": "files"},
    }
    d.update(over)
    return d


def write_splits(tmp: Path, fmt: str = "csv", train: list[str] = TRAIN) -> RawFiles:
    files = {}
    for split, rows in (("train", train), ("valid", VALID), ("test", TEST)):
        path = tmp / f"{split}.csv"
        path.write_text("\n".join([HEADER, *rows]) + "\n")
        if fmt == "parquet":
            table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in HEADER.split(",")[2:]}, strings_can_be_null=True))
            path = path.with_suffix(".parquet")
            pq.write_table(table, path)
        files[split] = [path]
    return RawFiles(by_split=files)


# ---- the reference: plain loops over the raw text ---------------------------------------------
def parse(rows: list[str]) -> list[dict]:
    out = []
    for line in rows:
        v = line.split(",")
        rec = dict(zip(HEADER.split(","), v))
        rec["positions"] = {f: ([x if x != "" else None for x in rec[f"hist_{f}"].split("|")]
                                if rec[f"hist_{f}"] else []) for f in FIELDS}
        out.append(rec)
    return out


def log_bucket(v: str) -> str:
    x = float(v)
    return str(math.floor(math.log(x) ** 2) if x > 2 else math.floor(x))


def vocab(values: list) -> dict[str, int]:
    """Count, order by (-count, value), ids from 2 (min_count 1)."""
    counts = Counter(x for x in values if x is not None)
    return {v: 2 + i for i, (v, _) in enumerate(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))}


def expected(rows: list[dict], train: list[dict]) -> dict[int, np.ndarray]:
    vocabs = {
        "item": vocab([r["item"] for r in train] + [x for r in train for x in r["positions"]["item"]]),
        "cat": vocab([r["cat"] for r in train] + [x for r in train for x in r["positions"]["cat"]]),
        "type": vocab([x for r in train for x in r["positions"]["type"]]),
        "dt": vocab([log_bucket(x) for r in train for x in r["positions"]["dt"] if x is not None]),
    }
    out = {}
    for r in rows:
        block = np.zeros((MAX_LEN, len(FIELDS)), dtype=np.int64)
        for k, f in enumerate(FIELDS):
            values = r["positions"][f][-MAX_LEN:]  # most recent MAX_LEN (raw is oldest first)
            for i, v in enumerate(values):
                key = None if v is None else (log_bucket(v) if f == "dt" else v)
                block[i, k] = vocabs[f].get(key, OOV_ID) if key is not None else OOV_ID
        out[int(r["rid"])] = block
    return out


def load(fm: FeatureMap, split: str) -> Batch:
    return next(iter(ParquetBatches(fm, split, batch_size=100)))


def by_rid(batch: Batch) -> dict[int, np.ndarray]:
    return {int(g): b for g, b in zip(batch.group.numpy(), batch.behaviours["hist"].numpy())}


# ---- preparation and loading --------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_prepared_behaviours_match_hand_encoding(tmp_path, fmt):
    schema = Schema.model_validate(schema_dict(source={**schema_dict()["source"], "format": fmt}))
    fm = prepare(schema, write_splits(tmp_path, fmt), tmp_path / "p", log=lambda *_: None)
    info = fm.feature("hist")
    assert info.kind == "behaviour" and info.max_len == MAX_LEN
    assert [(b.name, b.table, b.share_with) for b in info.fields] == [
        ("item", "item", "item"), ("cat", "cat", "cat"), ("type", "hist__type", None), ("dt", "hist__dt", None)]
    train = parse(TRAIN)
    for split, rows in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        batch = load(fm, split)
        assert batch.behaviours["hist"].dtype == torch.int64
        assert batch.behaviours["hist"].shape == (len(rows), MAX_LEN, len(FIELDS))
        got, want = by_rid(batch), expected(parse(rows), train)
        assert got.keys() == want.keys()
        for rid in want:
            np.testing.assert_array_equal(got[rid], want[rid], err_msg=f"{split} row rid={rid}")
    # Shared fields index their owner's table; own fields add tables of their own.
    tables = fm.tables()
    assert "hist__type" in tables and "hist__dt" in tables and "hist" not in tables
    assert info.fields[0].vocab_size == tables["item"] and info.fields[2].vocab_size == tables["hist__type"]
    # The length column counts the kept positions.
    lengths = {int(g): int(n) for g, n in zip(load(fm, "train").group, Batch.lengths(load(fm, "train").behaviours["hist"]))}
    assert lengths == {1: 3, 2: 0, 3: 1, 4: 3, 5: 2, 6: 3}


def test_behaviour_layout_details(tmp_path):
    fm = prepare(Schema.model_validate(schema_dict()), write_splits(tmp_path), tmp_path / "p", log=lambda *_: None)
    train = load(fm, "train")
    h = by_rid(train)
    assert (h[2] == 0).all()  # empty history: all padding
    assert (h[3][1:] == 0).all() and (h[3][0] != 0).all()  # padded at the end
    assert (h[4][1] == OOV_ID).all()  # missing values at a position: OOV in every field
    valid = by_rid(load(fm, "valid"))
    assert valid[7][0, 0] == OOV_ID and valid[7][0, 2] == OOV_ID and valid[7][1, 0] != OOV_ID
    # Batch.to and pin_memory-like mapping keep the behaviours.
    moved = train.to("cpu")
    assert torch.equal(moved.behaviours["hist"], train.behaviours["hist"])
    # Round trip through feature_map.json keeps the per-field information.
    again = FeatureMap.load(tmp_path / "p")
    assert again.feature("hist").fields == fm.feature("hist").fields
    assert "hist__type" in fm.report["oov_rate"]["valid"]
    # type "share" is unseen: 1 of the 2 valid positions of row 7 (row 8 has none).
    assert fm.report["oov_rate"]["valid"]["hist__type"] == pytest.approx(0.5)


def test_quantile_buckets_and_hashed_own_vocabulary(tmp_path):
    d = schema_dict()
    d["features"][3]["fields"][2] = {"name": "type", "hash_buckets": 5}
    d["features"][3]["fields"][3] = {"name": "dt", "bucketize": {"method": "quantile", "num_buckets": 4}}
    fm = prepare(Schema.model_validate(d), write_splits(tmp_path), tmp_path / "p", log=lambda *_: None)
    info = fm.feature("hist")
    bounds = info.fields[3].stats["boundaries"]
    dts = sorted(float(x) for r in parse(TRAIN) for x in r["positions"]["dt"] if x is not None)
    # numpy's "nearest" quantiles of the training positions' values (polars uses the same rule).
    ref = sorted({float(np.quantile(dts, q, method="nearest")) for q in (0.25, 0.5, 0.75)})
    assert bounds == pytest.approx(ref)
    h = by_rid(load(fm, "train"))
    for r in parse(TRAIN):
        values = r["positions"]["dt"][-MAX_LEN:]
        for i, v in enumerate(values):
            want = OOV_ID if v is None else 2 + sum(float(v) > b for b in bounds)
            assert h[int(r["rid"])][i, 3] == want
            t = r["positions"]["type"][-MAX_LEN:][i]
            assert (h[int(r["rid"])][i, 2] == OOV_ID) == (t is None) and h[int(r["rid"])][i, 2] < 2 + 5
    assert info.fields[2].vocab_size == 7 and fm.tables()["hist__type"] == 7


# ---- bad input ----------------------------------------------------------------------------------
def test_mismatched_lengths_fail_naming_file_row_column(tmp_path):
    bad = TRAIN[:2] + ["10,1,u1,i1,c1,i1|i2,c1,view|view,3|4"] + TRAIN[2:]  # line 4: hist_cat too short
    raw = write_splits(tmp_path, train=bad)
    with pytest.raises(BadInputError) as e:
        prepare(Schema.model_validate(schema_dict()), raw, tmp_path / "p", log=lambda *_: None)
    msg = str(e.value)
    assert str(raw.by_split["train"][0]) in msg and "line/row 4" in msg and "'hist_cat'" in msg
    assert "1 values" in msg and "has 2" in msg


def test_mismatched_lengths_are_counted_when_skipped(tmp_path):
    bad = TRAIN + ["10,1,u1,i1,c1,i1|i2,c1,view|view,3|4", "11,1,u1,i1,c1,i1,c1,view|buy,-3|4"]
    fm = prepare(Schema.model_validate(schema_dict()), write_splits(tmp_path, train=bad), tmp_path / "p",
                 on_bad_row="skip", log=lambda *_: None)
    report = fm.report["bad_rows"]
    # Row 11 has two problems (type too long, a negative dt): it is one skipped row.
    assert report["rows_skipped"] == 2
    assert report["by_reason"]["behaviour hist: fields of different lengths"] == 2
    assert report["by_reason"]["behaviour hist: field dt not a non-negative number"] == 1
    assert fm.splits["train"].rows == len(TRAIN)
    assert set(by_rid(load(fm, "train"))) == {int(r.split(",")[0]) for r in TRAIN}


@pytest.mark.parametrize("dt, what", [("5|-1", "'-1'"), ("5|x", "'x'"), ("5|nan", "'nan'")])
def test_bad_time_gaps_fail(tmp_path, dt, what):
    bad = TRAIN + [f"10,1,u1,i1,c1,i1|i2,c1|c2,view|view,{dt}"]
    raw = write_splits(tmp_path, train=bad)
    with pytest.raises(BadInputError) as e:
        prepare(Schema.model_validate(schema_dict()), raw, tmp_path / "p", log=lambda *_: None)
    msg = str(e.value)
    assert f"line/row {len(bad) + 1}" in msg and "'hist_dt'" in msg and what in msg


def test_time_gaps_out_of_order_fail_or_are_counted(tmp_path):
    """With ``order: non_increasing`` on the gap to the request, a history whose newer behaviour
    is further from the request than an older one is not sorted oldest first: a bad row."""
    d = schema_dict()
    d["features"][3]["fields"][3]["order"] = "non_increasing"
    schema = Schema.model_validate(d)
    bad = TRAIN + ["10,1,u1,i1,c1,i1|i2|i3,c1|c2|c1,view|view|view,9||12"]  # 9, missing, 12: out of order
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    raw = write_splits(tmp_path / "a", train=bad)
    with pytest.raises(BadInputError) as e:
        prepare(schema, raw, tmp_path / "a" / "p", log=lambda *_: None)
    msg = str(e.value)
    assert f"line/row {len(bad) + 1}" in msg and "'hist_dt'" in msg and "must not increase" in msg and "9|12" in msg
    fm = prepare(schema, write_splits(tmp_path / "b", train=bad), tmp_path / "b" / "p", on_bad_row="skip",
                 log=lambda *_: None)
    assert fm.report["bad_rows"]["by_reason"] == {"behaviour hist: field dt out of order": 1}
    assert fm.splits["train"].rows == len(TRAIN)  # every sorted row kept (row 4's gap is missing)
    with pytest.raises(ValueError, match="numeric"):
        Schema.model_validate(with_fields({"name": "x", "order": "non_decreasing"}))


# ---- schema validation --------------------------------------------------------------------------
def with_fields(*fields, **feature) -> dict:
    d = schema_dict()
    d["features"][3] = {"name": "hist", "type": "behaviour", "fields": list(fields), **feature}
    return d


@pytest.mark.parametrize("d, match", [
    (with_fields({"name": "item", "share_with": "nope"}), r"behaviour 'hist' field 'item': share_with='nope'"),
    (with_fields({"name": "item", "share_with": "hist"}), "must name a categorical feature"),
    (with_fields({"name": "a"}, {"name": "a"}), r"behaviour 'hist': duplicate field names \['a'\]"),
    (with_fields(), "fields"),
    (with_fields({"name": "dt", "bucketize": {"method": "log"}, "share_with": "item"}), "field 'dt': bucketize"),
    (with_fields({"name": "item", "share_with": "item", "min_count": 3}), "field 'item': shares"),
    (with_fields({"name": "a"}, max_len=0), "max_len"),
    (with_fields({"name": "a", "colour": 1}), "colour"),
])
def test_schema_errors_name_feature_and_field(d, match):
    with pytest.raises(ValueError, match=match):
        Schema.model_validate(d)


def test_schema_refuses_feature_named_like_a_field_column():
    d = schema_dict()
    d["features"][0] = {"name": "hist__item", "source": "user", "type": "categorical"}
    with pytest.raises(ValueError, match="hist__item"):
        Schema.model_validate(d)


def test_canonical_columns_list_every_field_source():
    cols = Schema.model_validate(schema_dict()).canonical_columns()
    assert {"hist_item", "hist_cat", "hist_type", "hist_dt"} <= set(cols) and "hist" not in cols


def test_schema_round_trips_through_its_dump(tmp_path):
    from rankmixer.data.schema import dump_schema, load_schema

    schema = Schema.model_validate(schema_dict())
    dump_schema(schema, tmp_path / "s.yaml")
    assert load_schema(tmp_path / "s.yaml") == schema


# ---- models built on a feature map with behaviours: mean-pooled fields or a sequence module ----
@pytest.mark.parametrize("model", ["dcnv2", "rankmixer"])
def test_models_build_and_run_beside_behaviours(tmp_path, model):
    from rankmixer.nn.embedding import FeatureEmbedding
    from tests.factories import small_model

    fm = prepare(Schema.model_validate(schema_dict()), write_splits(tmp_path), tmp_path / "p", log=lambda *_: None)
    batch = load(fm, "train")
    emb = FeatureEmbedding(fm, 4)
    # Every per-position field of a behaviour is also a mean-pooled field (pool_behaviours).
    assert emb.field_names == ["user", "item", "cat", *(f"hist.{f.name}" for f in fm.feature("hist").fields)]
    assert FeatureEmbedding(fm, 4, pool_behaviours=False).field_names == ["user", "item", "cat"]
    # The own tables of behaviour fields are rows of the fused weight; shared ones are not added.
    assert set(emb.table_offsets) == {"user", "item", "cat", "hist__type", "hist__dt"}
    assert emb.num_rows == 1 + sum(rows - 1 for rows in fm.tables().values())
    out = small_model(model, fm)(batch)
    assert out.logits.shape == (len(batch), 1) and torch.isfinite(out.logits).all()


def test_fuxictr_export_refuses_behaviours_by_name():
    from rankmixer.bench.fuxictr_export import ExportError, dataset_config

    with pytest.raises(ExportError, match="'hist'"):
        dataset_config(Schema.model_validate(schema_dict()), "d", "r")
