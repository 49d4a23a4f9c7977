"""Schema validation, raw reading with bad input, preparation and the streaming loader."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from rankmixer.data.datasets.base import RawFiles
from rankmixer.data.feature_map import FeatureMap
from rankmixer.data.arrays import pad_lists
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.data.encode import fnv1a64
from rankmixer.data.prepare import prepare
from rankmixer.data.reader import BadInputError, read_raw
from rankmixer.data.schema import OOV_ID, Schema, SchemaError, load_schema

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _schema(**over) -> Schema:
    d = {
        "name": "toy",
        "source": {
            "format": "csv",
            "columns": [
                {"name": "click", "type": "int", "required": True},
                {"name": "user", "type": "str"},
                {"name": "item", "type": "int"},
                {"name": "price", "type": "float"},
                {"name": "tags", "type": "str"},
                {"name": "hist", "type": "str"},
                {"name": "ts", "type": "int"},
            ],
        },
        "labels": [{"name": "click"}],
        "features": [
            {"name": "user", "type": "categorical", "min_count": 2},
            {"name": "item", "type": "categorical"},
            {"name": "price", "type": "numerical", "normalize": "standard"},
            {"name": "price_q", "source": "price", "type": "numerical",
             "bucketize": {"method": "quantile", "num_buckets": 4}},
            {"name": "tags", "type": "multi_categorical", "max_len": 3},
            {"name": "hist", "type": "sequence", "max_len": 2, "share_with": "item"},
        ],
        "group_key": "user",
        "time_column": "ts",
        "feature_groups": {"user": ["user", "hist"], "item": ["item", "price", "tags"]},
        "split": {"method": "ratio", "ratios": [0.6, 0.2, 0.2]},
    }
    d.update(over)
    return Schema.model_validate(d)


def _toy_csv(path: Path, n: int = 400, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["click,user,item,price,tags,hist,ts"]
    for i in range(n):
        user = f"u{rng.integers(0, 20)}"
        item = int(rng.integers(0, 30))
        hist = "|".join(str(x) for x in rng.integers(0, 40, size=rng.integers(0, 5)))
        tags = "|".join(rng.choice(list("abcdef"), size=rng.integers(0, 4), replace=False))
        price = "" if i % 17 == 0 else f"{rng.gamma(2.0, 3.0):.3f}"
        lines.append(f"{int(rng.random() < 0.3)},{user},{item},{price},{tags},{hist},{1000 + i}")
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- schema -----------------------------------------------------------------------------------
def test_schema_rejects_typos_and_bad_references(tmp_path):
    with pytest.raises(ValueError, match="min_cont"):
        _schema(features=[{"name": "user", "type": "categorical", "min_cont": 2}])
    with pytest.raises(ValueError, match="share_with='nope'"):
        _schema(features=[{"name": "h", "type": "sequence", "share_with": "nope"}])
    with pytest.raises(ValueError, match="unknown features"):
        _schema(feature_groups={"g": ["user", "ghost"]})
    with pytest.raises(ValueError, match="time_column"):
        _schema(split={"method": "time"}, time_column=None)
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\nsource: {columns: []}\nlabels: []\nfeatures: []\n")
    with pytest.raises(SchemaError) as e:
        load_schema(bad)
    assert str(bad) in str(e.value) and "labels" in str(e.value)


# ---- reader: bad input ------------------------------------------------------------------------
BAD_CASES = {
    "wrong column count": ("click,user,item,price,tags,hist,ts\n1,u1,3,1.0,a,1|2,5\n0,u2,4\n", "line 3", None),
    "non-numeric": ("click,user,item,price,tags,hist,ts\n1,u1,3,1.0,a,1|2,5\n0,u2,x7,2.0,a,,6\n", "line 3", "'item'"),
    "nan": ("click,user,item,price,tags,hist,ts\n1,u1,3,nan,a,1|2,5\n", "line 2", "'price'"),
    "inf": ("click,user,item,price,tags,hist,ts\n1,u1,3,1.0,a,1|2,5\n1,u1,3,-inf,a,1|2,5\n", "line 3", "'price'"),
    "missing required": ("click,user,item,price,tags,hist,ts\n,u1,3,1.0,a,1|2,5\n", "line 2", "'click'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_rows_fail_naming_file_line_column(tmp_path, case):
    text, where, column = BAD_CASES[case]
    f = tmp_path / "raw.csv"
    f.write_text(text)
    with pytest.raises(BadInputError) as e:
        read_raw([f], _schema().source, tmp_path / "out")
    msg = str(e.value)
    assert str(f) in msg and where in msg
    if column:
        assert column in msg


def test_skip_policy_counts_every_skipped_row(tmp_path):
    f = tmp_path / "raw.csv"
    f.write_text(
        "click,user,item,price,tags,hist,ts\n"
        "1,u1,3,1.0,a,1|2,5\n"       # good
        "0,u2,4\n"                   # too few fields
        "0,u2,x,2.0,a,,6\n"          # non-numeric item
        "1,u3,5,nan,b,,7\n"          # NaN
        "1,u3,5,inf,b,,7\n"          # inf
        "0,u4,6,3.0,c,,8,extra\n"    # too many fields
        "0,u5,7,,c,,9\n"             # missing optional price: kept
    )
    out, rep = read_raw([f], _schema().source, tmp_path / "out", on_bad_row="skip")
    kept = pl.read_parquet(out[0])
    assert kept.height == 2 and rep.rows_skipped == 5 and rep.rows_read == 7
    assert kept["__row"].to_list() == [2, 8]  # line numbers survive skipped lines
    assert rep.by_reason["wrong number of fields"] == 2
    assert kept["price"].to_list()[1] is None


def test_empty_file_and_missing_column(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(BadInputError, match="empty file"):
        read_raw([empty], _schema().source, tmp_path / "o")
    header_only = tmp_path / "h.csv"
    header_only.write_text("click,user,item,price,tags,hist,ts\n")
    with pytest.raises(BadInputError, match="no data rows"):
        read_raw([header_only], _schema().source, tmp_path / "o")
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("click,user,item,tags,hist,ts\n1,u,1,a,,3\n")
    with pytest.raises(BadInputError, match=r"missing column\(s\) \['price'\]"):
        read_raw([nocol], _schema().source, tmp_path / "o")


def test_label_outside_01_fails_or_is_skipped(tmp_path):
    f = _toy_csv(tmp_path / "raw.csv", n=50)
    lines = f.read_text().splitlines()
    lines[10] = "2" + lines[10][1:]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInputError, match=r"line/row 11: label values \{'click': 2\}"):
        prepare(_schema(), RawFiles(all=[f]), tmp_path / "p", log=lambda *_: None)
    fm = prepare(_schema(), RawFiles(all=[f]), tmp_path / "p2", on_bad_row="skip", log=lambda *_: None)
    assert sum(s.rows for s in fm.splits.values()) == 49
    assert fm.report["bad_rows"]["by_reason"] == {"label not in {0,1}": 1}


# ---- preparation ------------------------------------------------------------------------------
def test_prepare_encodes_against_train_statistics(tmp_path):
    f = _toy_csv(tmp_path / "raw.csv")
    fm = prepare(_schema(), RawFiles(all=[f]), tmp_path / "p", log=lambda *_: None)
    assert [x.name for x in fm.sparse] == ["user", "item", "price_q"]
    assert [x.name for x in fm.dense] == ["price"] and fm.bags[0].name == "tags"
    assert fm.sequences[0].share_with == "item" and fm.sequences[0].table == "item"
    assert sum(s.rows for s in fm.splits.values()) == 400

    raw = pl.read_csv(f, infer_schema=False)
    train = pl.read_parquet(fm.split_files("train"))
    valid = pl.read_parquet(fm.split_files("valid"))
    # Standard normalisation uses train statistics only: train mean ~0, std ~1.
    assert abs(train["price"].mean()) < 1e-5 and abs(train["price"].std() - 1) < 1e-3
    # Users seen fewer than min_count=2 times in train map to OOV; vocab is by train counts.
    vocab = pl.read_parquet(tmp_path / "p" / "vocab" / "user.parquet")
    assert vocab["count"].min() >= 2 and vocab["id"].min() == 2
    assert (valid["user"] >= OOV_ID).all()
    # Sequences keep the most recent max_len=2 items; bags the first max_len=3.
    assert train["hist"].list.len().max() <= 2 and train["tags"].list.len().max() <= 3
    # Item vocabulary covers history items too (shared table).
    item_vocab = set(pl.read_parquet(tmp_path / "p" / "vocab" / "item.parquet")["value"].to_list())
    assert "35" in item_vocab or "36" in item_vocab  # only history draws ids >= 30
    # Quantile buckets: 4 buckets from train quantiles, roughly equal train frequency.
    counts = train.filter(pl.col("price_q") != OOV_ID)["price_q"].value_counts()["count"].to_numpy()
    assert len(counts) == 4 and counts.min() > 0.6 * counts.max()
    assert raw.height == 400


def test_prepare_is_deterministic_and_cached(tmp_path):
    f = _toy_csv(tmp_path / "raw.csv")

    def digest(d: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(d.rglob("*.parquet")):
            h.update(p.read_bytes())
        return h.hexdigest()

    prepare(_schema(), RawFiles(all=[f]), tmp_path / "a", log=lambda *_: None)
    prepare(_schema(), RawFiles(all=[f]), tmp_path / "b", log=lambda *_: None)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    msgs = []
    prepare(_schema(), RawFiles(all=[f]), tmp_path / "a", log=msgs.append)
    assert any("reusing" in m for m in msgs)
    # A different split seed gives a different split.
    prepare(_schema(split={"method": "ratio", "ratios": [0.6, 0.2, 0.2], "seed": 7}), RawFiles(all=[f]),
            tmp_path / "c", log=lambda *_: None)
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_time_split_orders_splits(tmp_path):
    f = _toy_csv(tmp_path / "raw.csv")
    fm = prepare(_schema(split={"method": "time"}), RawFiles(all=[f]), tmp_path / "p", log=lambda *_: None)
    ts = {s: pl.read_parquet(fm.split_files(s))["__ts"] for s in ("train", "valid", "test")}
    assert ts["train"].max() < ts["valid"].min() <= ts["valid"].max() < ts["test"].min()


def test_unseen_categories_in_later_file_map_to_oov(tmp_path):
    train = _toy_csv(tmp_path / "train.csv", n=300, seed=1)
    valid = tmp_path / "valid.csv"
    valid.write_text("click,user,item,price,tags,hist,ts\n1,NEWUSER,999,1.0,zzz,998|3,5000\n")
    fm = prepare(_schema(split={"method": "files"}), RawFiles(by_split={"train": [train], "valid": [valid], "test": [valid]}),
                 tmp_path / "p", log=lambda *_: None)
    row = pl.read_parquet(fm.split_files("valid")).row(0, named=True)
    assert row["user"] == OOV_ID and row["item"] == OOV_ID and row["tags"] == [OOV_ID]
    assert row["hist"][0] == OOV_ID and row["hist"][1] >= 2  # 3 is a known item
    assert fm.report["oov_rate"]["valid"]["user"] == 1.0


def test_fnv1a64_matches_reference():
    def ref(s: str) -> int:
        h = 0xCBF29CE484222325
        for b in s.encode():
            h = ((h ^ b) * 0x100000001B3) % 2**64
        return h

    values = ["", "a", "68fd1e64", "héllo", "x" * 40]
    got = fnv1a64(pa.array(values))
    assert [int(v) for v in got] == [ref(v) for v in values]


def test_missing_column_named_in_schema(tmp_path):
    f = tmp_path / "raw.csv"
    f.write_text("click,user,item,price,tags,hist,ts\n1,u,1,1.0,a,,3\n")
    s = _schema(features=[{"name": "ghost_feature", "type": "categorical"}], feature_groups={})
    with pytest.raises(BadInputError, match="ghost_feature"):
        prepare(s, RawFiles(all=[f]), tmp_path / "p", log=lambda *_: None)


# ---- loader -----------------------------------------------------------------------------------
def test_pad_lists_matches_loop():
    lists = [[1, 2, 3], [], [4], [5, 6, 7, 8, 9], None]
    got = pad_lists(pa.array(lists, type=pa.list_(pa.int32())), 3)
    want = np.zeros((5, 3), dtype=np.int64)
    for i, x in enumerate(lists):
        for j, v in enumerate((x or [])[:3]):
            want[i, j] = v
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")
def toy_fm(tmp_path_factory) -> FeatureMap:
    d = tmp_path_factory.mktemp("toy")
    f = _toy_csv(d / "raw.csv", n=3000)
    return prepare(_schema(), RawFiles(all=[f]), d / "p", rows_per_shard=700, log=lambda *_: None)


def test_loader_covers_every_row_once(toy_fm):
    for workers in (0, 2):
        ds = ParquetBatches(toy_fm, "train", 64, shuffle=True, seed=3, shuffle_buffer=256)
        seen = []
        for b in make_loader(ds, num_workers=workers):
            assert b.sparse.shape[1] == 3 and b.bags["tags"].shape[1] == 3 and b.sequences["hist"].shape[1] == 2
            seen.append(b.timestamp.numpy())
        seen = np.concatenate(seen)
        want = pl.read_parquet(toy_fm.split_files("train"))["__ts"].to_numpy()
        assert len(seen) == len(want) and np.array_equal(np.sort(seen), np.sort(want))


def test_loader_shuffles_by_epoch_and_is_reproducible(toy_fm):
    def order(epoch: int, seed: int = 3) -> np.ndarray:
        ds = ParquetBatches(toy_fm, "train", 64, shuffle=True, seed=seed, shuffle_buffer=256)
        ds.set_epoch(epoch)
        return np.concatenate([b.timestamp.numpy() for b in make_loader(ds)])

    a, b = order(0), order(0)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, order(1)) and not np.array_equal(a, order(0, seed=4))
    # Not the file order: rows really move across row groups and within the window.
    assert not np.array_equal(a, np.sort(a))


def test_loader_ranks_partition_the_data(toy_fm):
    parts = []
    for rank in range(2):
        ds = ParquetBatches(toy_fm, "train", 50, shuffle=True, seed=1, rank=rank, world_size=2)
        parts.append(np.concatenate([b.timestamp.numpy() for b in make_loader(ds)]))
    assert not set(parts[0]) & set(parts[1])
    assert len(parts[0]) + len(parts[1]) == toy_fm.splits["train"].rows


@pytest.mark.skipif(not (SHARED / "criteo-sample").exists(), reason="shared data folder ../shared/data not present")
def test_real_criteo_sample_reads_with_missing_values(tmp_path):
    cols = [{"name": "label", "type": "int", "required": True}]
    cols += [{"name": f"I{i}", "type": "int"} for i in range(1, 14)] + [{"name": f"C{i}"} for i in range(1, 27)]
    out, rep = read_raw([SHARED / "criteo-sample" / "train.tsv"],
                        Schema.model_validate({"name": "c", "source": {"format": "tsv", "has_header": False, "columns": cols},
                                               "labels": [{"name": "label"}],
                                               "features": [{"name": "C1", "type": "categorical"}]}).source,
                        tmp_path)
    df = pl.read_parquet(out[0])
    assert df.height == 7200 and rep.rows_skipped == 0
    assert df["I12"].null_count() > 0  # Criteo has empty integer fields


def test_fetch_verifies_checksum_file(tmp_path):
    """fetch over file:// URLs (urllib, no network): a matching .md5 file passes, a wrong one
    fails and leaves no file that looks downloaded."""
    from rankmixer.data.datasets.base import Download, fetch

    src = tmp_path / "src"
    src.mkdir()
    payload = src / "data.zip"
    payload.write_bytes(b"rows and rows" * 1000)
    digest = hashlib.md5(payload.read_bytes()).hexdigest()
    (src / "data.zip.md5").write_text(f"MD5 (data.zip) = {digest}\n")
    (src / "bad.md5").write_text("0" * 32 + "  data.zip\n")
    good = Download(url=payload.as_uri(), filename="data.zip", md5_url=(src / "data.zip.md5").as_uri())
    assert fetch(good, tmp_path).read_bytes() == payload.read_bytes()
    bad = Download(url=payload.as_uri(), filename="other.zip", md5_url=(src / "bad.md5").as_uri())
    with pytest.raises(ValueError, match="md5 checksum mismatch"):
        fetch(bad, tmp_path)
    assert not (tmp_path / "other.zip").exists() and not (tmp_path / "other.zip.part").exists()
