"""Synthetic behaviour generator: layout, determinism, exact Bayes metrics, the planted terms
(checked by slow loops over the written strings) and the claim that pooling cannot reach it."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from threadpoolctl import threadpool_limits

from rankmixer.data.datasets.behaviour import (
    BLOCK_ROWS,
    META_FILE,
    SCHEMA_FILE,
    BehaviourConfig,
    generate,
    iter_batches,
    load_meta,
    schema,
    schema_dict,
)
from rankmixer.data.datasets.behaviour.generator import Generator

HIST = ("hist_item", "hist_cat", "hist_type", "hist_dt")
# Short histories and a short return period: fast, and every term is reachable.
SHORT = dict(rows_train=1_500, rows_valid=100, rows_test=1_500, seq_len_max=120, return_period=40,
             attention_window=8, n_users=2_000, n_items=3_000, n_categories=30, seed=5)


def _read(out, split: str, meta: dict) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(out / f) for f in meta["splits"][split]["files"]])


def _histories(df: pl.DataFrame) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(offsets [n + 1], column -> flat int64 values): the "|"-joined strings parsed."""
    lists = df.select(pl.col(c).str.split("|").list.eval(pl.element().cast(pl.Int64)) for c in HIST)
    lengths = lists["hist_item"].list.len().fill_null(0).cast(pl.Int64).to_numpy()
    for c in HIST:  # all four fields of a row hold the same number of values
        assert np.array_equal(lists[c].list.len().fill_null(0).to_numpy(), lengths), c
    offsets = np.zeros(df.height + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    flat = {c: lists[c].explode(empty_as_null=True).drop_nulls().to_numpy() for c in HIST}
    return offsets, flat


def _terms_slow(cfg: BehaviourConfig, df: pl.DataFrame) -> np.ndarray:
    """[n, 3] attention, recency, return, by plain loops over each row's history, as the
    documentation of ``behaviour.terms`` states them (type t weighs 1 + t / 2)."""
    offsets, h = _histories(df)
    items, cats = df["item"].cast(pl.Int64).to_numpy(), df["cat"].cast(pl.Int64).to_numpy()
    norm = sum(cfg.recency_decay**q for q in range(cfg.last_k))
    out = np.zeros((df.height, 3))
    for r in range(df.height):
        hi, hc, ht = (h[c][offsets[r] : offsets[r + 1]] for c in ("hist_item", "hist_cat", "hist_type"))
        n = len(hi)
        best = 0.0
        for j in range(max(0, n - cfg.attention_window), n):
            match = 1.0 if hi[j] == items[r] else cfg.same_category_match if hc[j] == cats[r] else 0.0
            best = max(best, (1.0 + 0.5 * ht[j]) * match)
        rec = sum(cfg.recency_decay ** (n - 1 - j) for j in range(max(0, n - cfg.last_k), n) if hc[j] == cats[r])
        lags = range(cfg.return_period - cfg.return_window, cfg.return_period + cfg.return_window + 1)
        ret = any(hi[n - lag] == items[r] for lag in lags if lag <= n)
        out[r] = best, rec / norm, float(ret)
    return out


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    """The default planted model and lengths, a few thousand rows; chunk_rows and
    rows_per_file exercise the slicing (train is two files)."""
    cfg = BehaviourConfig(rows_train=4_000, rows_valid=200, rows_test=3_000, chunk_rows=1_500,
                          rows_per_file=2_500, seed=11)
    out = tmp_path_factory.mktemp("behaviour")
    return cfg, out, generate(cfg, out, progress=False)


def test_config_is_strict():
    with pytest.raises(ValueError):
        BehaviourConfig(rows_trian=10)  # a typo must not pass silently
    with pytest.raises(ValueError, match="p_cand"):
        BehaviourConfig(p_cand_recent=0.6, p_cand_return=0.3, p_cand_interest=0.2)
    with pytest.raises(ValueError, match="return_window"):
        BehaviourConfig(return_period=5, return_window=5)
    with pytest.raises(ValueError, match="n_categories"):
        BehaviourConfig(n_items=10, n_categories=20)


def test_files_rows_and_columns(default_set):
    cfg, out, meta = default_set
    assert meta["splits"]["train"]["files"] == ["train-00000.parquet", "train-00001.parquet"]
    assert [pq.ParquetFile(out / f).metadata.num_rows for f in meta["splits"]["train"]["files"]] == [2_500, 1_500]
    assert (out / META_FILE).exists() and load_meta(out)["splits"] == meta["splits"]
    df = _read(out, "train", meta)
    assert df.height == cfg.rows_train and df.columns == meta["columns"]
    assert df["click"].dtype == pl.Int8 and df["bayes_p"].dtype == pl.Float64
    assert all(df[c].dtype == pl.Utf8 for c in ("user", "item", "cat", *HIST))
    assert 0.12 <= df["click"].mean() <= 0.28  # target_ctr 0.2
    items, cats = df["item"].cast(pl.Int64).to_numpy(), df["cat"].cast(pl.Int64).to_numpy()
    assert np.array_equal(cats, items % cfg.n_categories)

    offsets, h = _histories(df)
    lengths = np.diff(offsets)
    assert lengths.max() <= cfg.seq_len_max
    assert df["hist_item"].null_count() == (lengths == 0).sum() > 0  # empty histories are null
    assert (lengths < 50).mean() > 0.1 and (lengths > 600).mean() > 0.1  # short and long users
    assert np.array_equal(h["hist_cat"], h["hist_item"] % cfg.n_categories)
    assert set(np.unique(h["hist_type"])) == set(range(cfg.n_types))
    dt = h["hist_dt"]
    assert dt.min() >= 0
    row = np.repeat(np.arange(df.height), lengths)
    same_row = row[1:] == row[:-1]
    assert (np.diff(dt)[same_row] <= 0).all()  # oldest first: the gap to the request shrinks


def test_deterministic_and_layout_independent(tmp_path):
    # One full block plus a partial one.
    cfg = BehaviourConfig(**{**SHORT, "rows_train": BLOCK_ROWS + 700, "rows_valid": 50, "rows_test": 50})
    a = generate(cfg, tmp_path / "a", progress=False)
    generate(cfg, tmp_path / "b", progress=False)
    for split in ("train", "valid", "test"):
        for f in a["splits"][split]["files"]:
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / SCHEMA_FILE).read_bytes() == (tmp_path / "b" / SCHEMA_FILE).read_bytes()
    # Another file layout: the same rows.
    c = generate(cfg.model_copy(update={"chunk_rows": 999, "rows_per_file": 2_000}), tmp_path / "c", progress=False)
    assert len(c["splits"]["train"]["files"]) == 3
    assert _read(tmp_path / "c", "train", c).equals(_read(tmp_path / "a", "train", a))
    assert pl.from_arrow(next(iter_batches(cfg, "valid"))).equals(_read(tmp_path / "a", "valid", a))
    # Another seed: other data; more rows: the same first block.
    d = generate(cfg.model_copy(update={"seed": 6, "rows_train": BLOCK_ROWS}), tmp_path / "d", progress=False)
    assert not _read(tmp_path / "d", "test", d).equals(_read(tmp_path / "a", "test", a))
    e = generate(cfg.model_copy(update={"rows_train": BLOCK_ROWS}), tmp_path / "e", progress=False)
    assert _read(tmp_path / "e", "train", e).equals(_read(tmp_path / "a", "train", a).head(BLOCK_ROWS))


def test_edge_configs(tmp_path):
    """No histories at all (every history column null), and a return period beyond every
    history (the term is constant and switched off by its zero spread): still valid data."""
    base = dict(rows_train=300, rows_valid=10, rows_test=10, n_users=100, n_items=200, n_categories=10)
    meta = generate(BehaviourConfig(**base, empty_rate=1.0), tmp_path / "empty", progress=False)
    df = _read(tmp_path / "empty", "train", meta)
    assert all(df[c].null_count() == df.height for c in HIST)
    assert 0.0 < df["bayes_p"].min() and df["bayes_p"].max() < 1.0
    meta = generate(BehaviourConfig(**base, seq_len_max=30, return_period=100), tmp_path / "short", progress=False)
    df = _read(tmp_path / "short", "train", meta)
    assert meta["planted_model"]["standardisation"]["return"]["mean"] == 0.0
    assert np.isfinite(df["bayes_p"].to_numpy()).all() and 0.1 < df["click"].mean() < 0.3


def test_bayes_metrics_match_sklearn(default_set):
    cfg, out, meta = default_set
    for split in ("train", "test"):
        df = _read(out, split, meta)
        y, p = df["click"].to_numpy(), df["bayes_p"].to_numpy()
        m = meta["splits"][split]
        # The meta's AUC ranks float32 p (ties of float32 count 1/2); float64 p differs a hair.
        assert m["bayes_auc"] == pytest.approx(roc_auc_score(y, p.astype(np.float32)), abs=1e-12)
        assert m["bayes_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-6)
        assert m["bayes_logloss"] == pytest.approx(log_loss(y, p), abs=1e-9)
        assert m["label_mean"] == pytest.approx(y.mean(), abs=1e-12)


def test_planted_terms_match_slow_loops(tmp_path):
    """Without the first-order biases (not in the files), bayes_p is sigmoid(bias + the
    standardised, scaled sequence terms) recomputed from the written strings alone."""
    cfg = BehaviourConfig(**SHORT, first_order_scale=0.0, attention_scale=0.9, recency_scale=0.7, return_scale=1.3)
    meta = generate(cfg, tmp_path, progress=False)
    df = _read(tmp_path, "test", meta)
    terms = _terms_slow(cfg, df)
    model = meta["planted_model"]
    logit = np.full(df.height, model["bias"])
    for k, name in enumerate(("attention", "recency", "return")):
        st = model["standardisation"][name]
        logit += model["scales"][name] * (terms[:, k] - st["mean"]) / st["std"]
    np.testing.assert_allclose(1 / (1 + np.exp(-logit)), df["bayes_p"].to_numpy(), rtol=1e-9, atol=1e-12)
    assert (terms > 0).mean(axis=0).min() > 0.05  # every term is active on a fair share of rows


def test_return_term_alone_is_position_specific(tmp_path):
    """Only the long-range term on: a candidate seen return_period (+-window) behaviours ago
    raises p; the same candidate seen anywhere else in the history does not."""
    cfg = BehaviourConfig(**SHORT, first_order_scale=0.0, attention_scale=0.0, recency_scale=0.0)
    meta = generate(cfg, tmp_path, progress=False)
    df = _read(tmp_path, "train", meta)
    p = df["bayes_p"].to_numpy()
    offsets, h = _histories(df)
    items = df["item"].cast(pl.Int64).to_numpy()
    at_period = np.zeros(df.height, dtype=bool)
    elsewhere = np.zeros(df.height, dtype=bool)
    for r in range(df.height):
        hist = h["hist_item"][offsets[r] : offsets[r + 1]]
        lags = len(hist) - np.flatnonzero(hist == items[r])
        near = np.abs(lags - cfg.return_period) <= cfg.return_window
        at_period[r], elsewhere[r] = near.any(), (~near).any() and not near.any()
    assert at_period.sum() > 50 and elsewhere.sum() > 50
    assert p[at_period].min() > p[~at_period].max()  # two levels only, the higher at the period
    assert np.ptp(p[elsewhere]) < 1e-12 and np.ptp(p[~at_period & ~elsewhere]) < 1e-12
    assert p[elsewhere][0] == pytest.approx(p[~at_period & ~elsewhere][0], abs=1e-12)


def _pooled_features(cfg: BehaviourConfig, df: pl.DataFrame, first: np.ndarray) -> np.ndarray:
    """The best linear-in-pooled-features inputs we can build: the candidate's category
    (one-hot), the history's category histogram (mean of one-hot), their product (per
    category: the share of the history in the candidate's category) and that share, the
    candidate item's share and presence in the history, the type histogram, the length; and
    the true first-order logit (so that only the sequence differs between the two models)."""
    offsets, h = _histories(df)
    n, C = df.height, cfg.n_categories
    lengths = np.diff(offsets)
    row = np.repeat(np.arange(n), lengths)
    cand_cat = df["cat"].cast(pl.Int64).to_numpy()
    cand_item = df["item"].cast(pl.Int64).to_numpy()
    per_row = np.maximum(lengths, 1)[:, None]
    hist_cat = np.bincount(row * C + h["hist_cat"], minlength=n * C).reshape(n, C) / per_row
    types = np.bincount(row * cfg.n_types + h["hist_type"], minlength=n * cfg.n_types).reshape(n, -1) / per_row
    one_hot = np.eye(C)[cand_cat]
    same_item = np.bincount(row, weights=h["hist_item"] == cand_item[row], minlength=n)
    share = hist_cat[np.arange(n), cand_cat]
    return np.column_stack([first, one_hot, hist_cat, one_hot * hist_cat, share, np.sqrt(share),
                            same_item / np.maximum(lengths, 1), same_item > 0, types,
                            np.log1p(lengths), lengths == 0])


def _lr_auc(x_train, y_train, x_test, y_test) -> float:
    mu, sd = x_train.mean(axis=0), x_train.std(axis=0) + 1e-9
    with threadpool_limits(1):  # one BLAS thread: spinning threads make lbfgs slow on a busy box
        lr = LogisticRegression(C=1.0, max_iter=2_000).fit((x_train - mu) / sd, y_train)
    return roc_auc_score(y_test, lr.predict_proba((x_test - mu) / sd)[:, 1])


def test_pooling_cannot_reach_bayes(default_set):
    """A logistic regression on pooled history features stays far below the Bayes AUC; one on
    the planted position-aware features (computed from the strings by slow loops) nearly
    reaches it. Both get the true first-order logit, so only the use of the sequence differs."""
    cfg, out, meta = default_set
    gen = Generator(cfg)  # public tables for the first-order logit, given to both models alike
    data = {}
    for split in ("train", "test"):
        df = _read(out, split, meta)
        items = df["item"].cast(pl.Int64).to_numpy()
        first = (gen.user_bias[df["user"].cast(pl.Int64).to_numpy()] + gen.item_bias[items]
                 + gen.cat_bias[items % cfg.n_categories])
        pooled = _pooled_features(cfg, df, first)
        planted = np.column_stack([first, _terms_slow(cfg, df)])
        data[split] = pooled, planted, df["click"].to_numpy()
    (p_tr, s_tr, y_tr), (p_te, s_te, y_te) = data["train"], data["test"]
    pooled_auc = _lr_auc(p_tr, y_tr, p_te, y_te)
    planted_auc = _lr_auc(s_tr, y_tr, s_te, y_te)
    bayes = meta["splits"]["test"]["bayes_auc"]
    print(f"bayes {bayes:.4f}  pooled LR {pooled_auc:.4f}  planted-feature LR {planted_auc:.4f}")
    assert bayes - pooled_auc > 0.08, (bayes, pooled_auc)
    assert planted_auc > bayes - 0.02, (bayes, planted_auc)
    assert planted_auc - pooled_auc > 0.08


def test_schema_form(default_set):
    """The schema is issue 15's behaviour layout and validates as a Schema."""
    cfg, out, meta = default_set
    raw = schema_dict(cfg)
    assert yaml.safe_load((out / SCHEMA_FILE).read_text()) == raw
    hist = raw["features"][-1]
    assert hist == {
        "name": "hist", "type": "behaviour", "max_len": cfg.seq_len_max, "separator": "|",
        "fields": [
            {"name": "item", "source": "hist_item", "share_with": "item"},
            {"name": "cat", "source": "hist_cat", "share_with": "cat"},
            {"name": "type", "source": "hist_type"},
            {"name": "dt", "source": "hist_dt", "bucketize": {"method": "log"}, "order": "non_increasing"},
        ],
    }
    assert [c["name"] for c in raw["source"]["columns"]] == [c for c in meta["columns"] if c != "bayes_p"]
    assert schema_dict(BehaviourConfig(hist_max_len=200))["features"][-1]["max_len"] == 200
    assert schema(cfg).feature("hist").max_len == cfg.seq_len_max


def test_preset_prepares_and_loads_behaviours(tmp_path):
    """The ``behaviour`` preset end to end: generated on first use, prepared, loaded as a
    [B, max_len, 4] behaviour tensor whose lengths are the raw histories' (truncated to the most
    recent max_len), with the Bayes metrics carried in the feature map."""
    from rankmixer import experiment
    from rankmixer.config import load_config
    from rankmixer.data.loader import ParquetBatches, make_loader

    opts = {"rows_train": 600, "rows_valid": 200, "rows_test": 200, "n_users": 100, "n_items": 300,
            "n_categories": 10, "seq_len_max": 40, "hist_max_len": 16, "return_period": 20, "attention_window": 8}
    cfg = load_config(None, ["data.dataset=behaviour", f"data.preset_options={json.dumps(opts)}",
                             f"data.prepared_dir={tmp_path / 'prep'}", f"run_dir={tmp_path / 'run'}"])
    fm = experiment.prepare_data(cfg.data, log=lambda m: None)
    assert fm.extras["bayes"]["test"]["auc"] > 0.5
    raw = pl.read_parquet(tmp_path / "prep-raw" / "train.parquet")
    lengths = raw["hist_item"].str.split("|").list.len().fill_null(0).to_numpy()
    batch = next(iter(make_loader(ParquetBatches(fm, "train", len(raw), shuffle=False))))
    hist = batch.behaviours["hist"]
    assert hist.shape == (len(raw), 16, 4)
    np.testing.assert_array_equal((hist[:, :, 0] != 0).sum(dim=1).numpy(), np.minimum(lengths, 16))
