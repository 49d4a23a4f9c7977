"""Synthetic CTR generator: determinism, layout, skew, Bayes metrics, real interactions, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from rankmixer.data.datasets.synthetic import (
    BLOCK_ROWS,
    META_FILE,
    SCHEMA_FILE,
    SyntheticConfig,
    generate,
    iter_batches,
    load_meta,
    schema,
)
from rankmixer.data.schema import (
    CategoricalFeature,
    MultiCategoricalFeature,
    NumericalFeature,
    Schema,
    SequenceFeature,
    load_schema,
)

SRC = Path(__file__).resolve().parents[2] / "src"

# Small but structured: enough rows for a logistic regression to learn the first-order effects.
SMALL = dict(
    rows_train=40_000,
    rows_valid=5_000,
    rows_test=20_000,
    n_users=3_000,
    n_items=2_000,
    vocab_max=2_000,
    n_tags=200,
    n_item_clusters=20,
    seed=7,
)


def _read(out: Path, split: str, meta: dict) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(out / f) for f in meta["splits"][split]["files"]])


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    # chunk_rows below BLOCK_ROWS and rows_per_file not a multiple of it: exercises the slicing.
    cfg = SyntheticConfig(**SMALL, chunk_rows=10_000, rows_per_file=25_000)
    out = tmp_path_factory.mktemp("synthetic")
    meta = generate(cfg, out, progress=False)
    return cfg, out, meta


def test_config_is_strict():
    with pytest.raises(ValueError):
        SyntheticConfig(rows_trian=10)  # typo must not pass silently
    with pytest.raises(ValueError):
        SyntheticConfig(n_categorical=5, vocab_sizes=[10, 20])


def test_files_rows_and_columns(small):
    cfg, out, meta = small
    assert meta["splits"]["train"]["files"] == ["train-00000.parquet", "train-00001.parquet"]
    assert meta["splits"]["valid"]["files"] == ["valid.parquet"]
    assert [pq.ParquetFile(out / f).metadata.num_rows for f in meta["splits"]["train"]["files"]] == [25_000, 15_000]
    for split in ("train", "valid", "test"):
        df = _read(out, split, meta)
        assert df.height == cfg.rows(split) == meta["splits"][split]["rows"]
        assert df.columns == meta["columns"]
        assert meta["splits"][split]["label_mean"] == pytest.approx(df["click"].mean(), abs=1e-12)
    # Row groups of at most 100k rows; a write never exceeds chunk_rows.
    md = pq.ParquetFile(out / "train-00000.parquet").metadata
    assert max(md.row_group(i).num_rows for i in range(md.num_row_groups)) <= cfg.chunk_rows
    assert (out / META_FILE).exists() and (out / SCHEMA_FILE).exists()
    assert json.loads((out / META_FILE).read_text())["splits"] == meta["splits"]
    assert load_meta(out)["generation_seconds"] > 0

    df = _read(out, "train", meta)
    assert df["click"].dtype == pl.Int8 and df["bayes_p"].dtype == pl.Float64
    assert df["user"].dtype == pl.Utf8 and df["I1"].dtype == pl.Int64
    dense = df.select([c for c in df.columns if c.startswith("I")])
    assert dense.null_count().sum_horizontal().item() > 0  # some values missing
    assert dense.min().min_horizontal().item() >= 0  # counts are non-negative
    assert dense.max().max_horizontal().item() > 1_000  # heavy tails
    assert 0.1 <= df["click"].mean() <= 0.3  # base CTR
    tags = df["tags"].str.split("|")
    assert tags.list.len().min() >= 1 and tags.list.len().max() <= cfg.max_tags
    hist = df["hist_items"].drop_nulls().str.split("|")
    assert hist.list.len().max() <= cfg.seq_len
    items = set(df["item"].unique().to_list())
    hist_ids = set(hist.explode(empty_as_null=True).unique().to_list())
    assert len(hist_ids & items) > 0.5 * len(hist_ids)  # histories use the item vocabulary


@pytest.mark.slow  # ~5 s: generates the set twice
def test_deterministic_and_layout_independent(tmp_path, small):
    # One full block of BLOCK_ROWS plus a partial one.
    cfg = SyntheticConfig(**{**SMALL, "rows_train": 36_000, "rows_valid": 3_000, "rows_test": 3_000})
    a = generate(cfg, tmp_path / "a", progress=False)
    generate(cfg, tmp_path / "b", progress=False)
    for split in ("train", "valid", "test"):
        for f in a["splits"][split]["files"]:
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    # Another file layout: same rows.
    other = cfg.model_copy(update={"chunk_rows": 7_000, "rows_per_file": 13_000})
    c = generate(other, tmp_path / "c", progress=False)
    assert len(c["splits"]["train"]["files"]) == 3
    assert _read(tmp_path / "c", "train", c).equals(_read(tmp_path / "a", "train", a))
    # The in-memory stream is the same data.
    streamed = pl.from_arrow(next(iter_batches(cfg, "valid")))
    assert streamed.equals(_read(tmp_path / "a", "valid", a))
    # A different seed gives different data.
    d = generate(cfg.model_copy(update={"seed": 8}), tmp_path / "d", progress=False)
    assert (tmp_path / "d" / "valid.parquet").read_bytes() != (tmp_path / "a" / "valid.parquet").read_bytes()
    assert not _read(tmp_path / "d", "train", d).equals(_read(tmp_path / "a", "train", a))
    # Larger data sets keep the smaller one's full blocks (scaling studies).
    _, out, meta = small  # same seed and law, 40k rows
    first = _read(tmp_path / "c", "train", c).head(BLOCK_ROWS)
    assert _read(out, "train", meta).head(BLOCK_ROWS).equals(first)


def test_zipf_skew(small):
    cfg, out, meta = small
    df = _read(out, "train", meta)
    n = df.height
    vocab = meta["planted_model"]["vocab_sizes"]
    big = [c for c in ["item", "user"] + [f"C{k}" for k in range(1, 25)] if c in vocab and vocab[c] >= 200]
    assert len(big) >= 5
    for col in big:
        counts = df[col].value_counts(sort=True)["count"]
        top_share = counts[0] / n
        assert top_share > 20 / vocab[col], (col, top_share, vocab[col])  # far above uniform
        assert counts[:10].sum() / n > 0.2, col  # a few ids dominate
    item_counts = df["item"].value_counts(sort=True)["count"].to_numpy()
    assert item_counts[0] > 50 * np.median(item_counts)


def test_bayes_metrics_match_sklearn(small):
    cfg, out, meta = small
    for split in ("train", "test"):
        df = _read(out, split, meta)
        y, p = df["click"].to_numpy(), df["bayes_p"].to_numpy()
        m = meta["splits"][split]
        # The meta's AUC ranks float32 p (ties of float32 count 1/2); float64 p differs a hair.
        assert m["bayes_auc"] == pytest.approx(roc_auc_score(y, p.astype(np.float32)), abs=1e-12)
        assert m["bayes_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
        assert m["bayes_logloss"] == pytest.approx(log_loss(y, p), abs=1e-9)
        assert m["label_mean"] == pytest.approx(y.mean(), abs=1e-12)
        assert m["bayes_p_mean"] == pytest.approx(p.mean(), abs=1e-6)
        assert 0.75 < m["bayes_auc"] < 0.95


def _lr_features(df: pl.DataFrame, enc: OneHotEncoder | None, stats=None):
    cats = ["user", "item"] + [c for c in df.columns if c.startswith("C")] + ["tags"]
    x_cat = df.select(cats).to_numpy()
    dense = df.select([c for c in df.columns if c.startswith("I")]).to_numpy().astype(float)
    dense = np.hstack([np.log1p(np.nan_to_num(dense)), np.isnan(dense)])
    if enc is None:
        enc = OneHotEncoder(handle_unknown="ignore").fit(x_cat)
        stats = dense.mean(axis=0), dense.std(axis=0) + 1e-9
    x = sp.hstack([enc.transform(x_cat), sp.csr_matrix((dense - stats[0]) / stats[1])]).tocsr()
    return x, enc, stats


def test_interactions_beat_logistic_regression(small):
    """A linear model on one-hot ids and log dense features stays far below the Bayes AUC."""
    cfg, out, meta = small
    train, test = _read(out, "train", meta), _read(out, "test", meta)
    x_tr, enc, stats = _lr_features(train, None)
    x_te, _, _ = _lr_features(test, enc, stats)
    # One BLAS thread: on a small busy machine OpenBLAS's spinning threads make lbfgs ~20x slower.
    with threadpool_limits(1):
        lr = LogisticRegression(C=0.03, max_iter=300).fit(x_tr, train["click"].to_numpy())
    lr_auc = roc_auc_score(test["click"].to_numpy(), lr.predict_proba(x_te)[:, 1])
    bayes = meta["splits"]["test"]["bayes_auc"]
    assert bayes > lr_auc + 0.04, (bayes, lr_auc)


def test_schema_matches_files(small):
    cfg, out, meta = small
    s = schema(cfg)
    assert isinstance(s, Schema)
    assert Schema.model_validate(s.model_dump()) == s
    assert load_schema(out / SCHEMA_FILE) == s
    assert s.source.format == "parquet" and s.split.method == "files"
    assert [lab.name for lab in s.labels] == ["click"] and s.group_key == "user"
    source = [c.name for c in s.source.columns]
    assert "bayes_p" not in source and "bayes_p" not in s.canonical_columns()
    assert source == [c for c in meta["columns"] if c != "bayes_p"]
    hist = s.feature("hist_items")
    assert isinstance(hist, SequenceFeature) and hist.share_with == "item" and hist.max_len == cfg.seq_len
    assert isinstance(s.feature("tags"), MultiCategoricalFeature)
    assert isinstance(s.feature("I1"), NumericalFeature) and s.feature("I1").normalize == "log1p"
    assert isinstance(s.feature("item"), CategoricalFeature)
    grouped = [f for g in s.feature_groups.values() for f in g]
    assert sorted(grouped) == sorted(f.name for f in s.features)
    # Defaults: the largest fields are hashed; other options follow the config.
    d = schema(SyntheticConfig())
    assert d.feature("user").hash_buckets is not None and d.feature("C1").hash_buckets is None
    b = schema(SyntheticConfig(dense_encoding="bucketize", id_type="int", n_dense=2, n_categorical=2))
    assert b.feature("I1").bucketize is not None and b.source.columns[1].type == "int"
    # The project's reader type-checks the files against the schema's source spec.
    from rankmixer.data.reader import read_raw

    typed, report = read_raw([out / "valid.parquet"], s.source, out / "typed")
    assert report.rows_skipped == 0 and pq.ParquetFile(typed[0]).metadata.num_rows == cfg.rows_valid


_MEM_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    sys.path.insert(0, {src!r})
    from rankmixer.data.datasets.synthetic import SyntheticConfig, generate
    from rankmixer.data.datasets.synthetic.generator import Generator
    cfg = SyntheticConfig(rows_train={rows}, rows_valid=1000, rows_test=1000, chunk_rows=65536,
                          n_categorical=6, n_dense=3, seq_len=8, max_tags=2, seed=3)
    Generator(cfg)  # parameter tables and calibration: part of the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    meta = generate(cfg, {out!r}, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"growth_mb": (peak - base) / 1024, "rows_per_s": meta["rows_per_second"]}}))
    """
)


def _peak_growth_mb(rows: int, out: Path) -> dict:
    script = _MEM_SCRIPT.format(src=str(SRC), rows=rows, out=str(out))
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # generates 2M rows (~10 s on 2 cores)
def test_memory_bounded(tmp_path):
    """Peak memory stays far below the data size: only the chunk buffers, the block temporaries
    and about 9 bytes/row for the exact Bayes AUC (float32 p, bool label, a sorted copy: 18 MB
    here)."""
    big = _peak_growth_mb(2_000_000, tmp_path / "big")
    pf = pq.ParquetFile(tmp_path / "big" / "train.parquet")
    assert pf.metadata.num_rows == 2_000_000
    group = pf.read_row_group(0)
    data_mb = group.nbytes / group.num_rows * pf.metadata.num_rows / 2**20  # the split in Arrow
    assert data_mb > 120
    # Far below the data, and not growing with the rows beyond the AUC's ~9 bytes each.
    assert big["growth_mb"] < min(100.0, data_mb / 2), (big, data_mb)
