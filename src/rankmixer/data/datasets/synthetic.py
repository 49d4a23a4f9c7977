"""Seeded synthetic CTR data with a planted ground-truth model (quick-start and scaling studies).

``generate(cfg, out_dir)`` streams rows block by block into Parquet, so any number of rows
(100M+) can be written with memory bounded by ``chunk_rows``; ``schema(cfg)`` is the matching
feature :class:`~rankmixer.data.schema.Schema`.

Files written into ``out_dir``
------------------------------
* ``train.parquet``, ``valid.parquet``, ``test.parquet``; a split with more than
  ``rows_per_file`` rows is written as ``<split>-00000.parquet``, ``<split>-00001.parquet``, ...
  instead (each at most ``rows_per_file`` rows, in row order). Files of an earlier run with the
  same split name are removed first. ``synthetic_meta.json`` lists the files of every split.
* ``synthetic_meta.json``: the config, the files and rows of each split, the label mean, the
  Bayes-optimal AUC / logloss (of ``bayes_p`` against the realised labels), the planted model's
  summary and the generation time.
* ``schema.yaml``: ``schema(cfg)`` as YAML (feed it to ``rankmixer data prepare``).

Columns (one row per impression)
--------------------------------
* ``click`` (int8, 0/1): the label, Bernoulli(``bayes_p``).
* ``user``, ``item``, ``C1`` .. ``C{n_categorical-2}``: categorical ids, decimal strings
  (``id_type="str"``, default) or int64 (``id_type="int"``). Every field is Zipf-distributed
  (a few ids dominate; exponent ``zipf_exponent``, ``user_zipf_exponent`` for users, so no
  single user owns a large share of the rows). ``C1, C4, C7, ...`` are attributes of the user (a fixed value per
  user, like age or city), ``C2, C5, ...`` attributes of the item, ``C3, C6, ...`` per-impression
  context. Vocabulary sizes grow log-uniformly from ``vocab_min`` to ``vocab_max`` (C1 smallest)
  unless ``vocab_sizes`` gives them.
* ``I1`` .. ``I{n_dense}`` (int64, nullable): Criteo-like counts: non-negative, log-normal heavy
  tails, many zeros, 0 .. ``dense_missing_max`` of each column missing (null).
* ``tags`` (string ``"a|b|c"``): 1 .. ``max_tags`` distinct tag ids of the item (an item always
  has the same tags).
* ``hist_items`` (string ``"a|b|c"``, null when empty): up to ``seq_len`` earlier items of the
  user, oldest first, in the vocabulary of ``item`` (the schema shares the table).
* ``bayes_p`` (float64): the true click probability. For auditing only: it is not in the
  schema, so preparation drops it.

The planted model
-----------------
``logit = bias + sum_g scale_g * component_g`` where every component is standardised on a
calibration sample and ``bias`` is solved so the mean CTR is ``target_ctr``:

* ``first``: per-id weights of every categorical field (field importances vary), the mean
  weight of the item's tags, and a linear term in the (log) dense features;
* ``pair``: FM-style dot products of latent vectors for ``n_pairs`` field pairs, always
  including (user, item) and (user, tags) (tags: mean latent of the item's tags);
* ``triple``: 3-way product sum_k u_k i_k c_k of user, item and a context field's latents;
* ``mlp``: a random tanh MLP on the latents of user, item and one more field plus four dense
  features;
* ``dense``: a dense x dense product, a threshold, dense x categorical (a per-id slope) and a
  square, on standardised log1p dense values;
* ``seq``: the dot product of the target item's latent with the recency-weighted mean latent of
  the history items (weight ``0.8 ** age``).

Items belong to ``n_item_clusters`` clusters; every user has a home cluster, and targets and
history items come from it with probability ``cluster_affinity``, so history, user and item are
correlated as in real logs. A user's (item's) latent vector is the sum of its cluster's
(``cluster_share`` of the variance), its attribute fields' (``attribute_share``) and its own,
so interactions partly generalise to rare users and items. Besides user, item and tags, only
fields with at most ``interaction_vocab_max`` ids take part in interactions (the huge fields
act first-order only), which keeps the interactions learnable from modest data. Everything comes from ``seed``: the parameters, a calibration sample, and each block of
``BLOCK_ROWS`` rows of each split has its own random stream, so the same config gives the same
files byte for byte, and ``chunk_rows`` / ``rows_per_file`` change only the file layout, never
the rows. The parameters do not depend on the row counts either, so for scaling studies a
larger ``rows_train`` keeps the first ``rows_train // BLOCK_ROWS`` blocks of a smaller one.

Command line: ``python -m rankmixer.data.datasets.synthetic OUT_DIR [--rows-train N] ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rankmixer.data.schema import (
    Bucketize,
    CategoricalFeature,
    LabelSpec,
    MultiCategoricalFeature,
    NumericalFeature,
    RawColumn,
    Schema,
    SequenceFeature,
    SourceSpec,
    SplitSpec,
    dump_schema,
)

__all__ = [
    "SyntheticConfig",
    "generate",
    "schema",
    "iter_batches",
    "load_meta",
    "config_from_dir",
    "split_files",
    "BLOCK_ROWS",
    "META_FILE",
    "SPLITS",
]

SPLITS = ("train", "valid", "test")
META_FILE = "synthetic_meta.json"
SCHEMA_FILE = "schema.yaml"
# Rows per independent random stream. Fixed (not a config field) so that the chunk size never
# changes the data.
BLOCK_ROWS = 32_768
_CALIB_ROWS = 65_536
_MAX_ROW_GROUP = 100_000
_SPLIT_KEY = {"train": 1, "valid": 2, "test": 3}
_PARAM_KEY, _CALIB_KEY = 0, 4
_N_FACTORS = 4  # row-level factors behind the dense features (the first is the user's activity)
_RECENCY_DECAY = 0.8
_MLP_HIDDEN = 16
_MLP_DENSE = 4
_HASH_BUCKET_FACTOR = 2  # hashed fields get ~2x their vocabulary in buckets (fewer collisions)
_STR_TABLE_MAX = 1 << 22
_GROUPS = ("first", "pair", "triple", "mlp", "dense", "seq")


class SyntheticConfig(BaseModel):
    """Everything that defines a synthetic dataset. Same config (seed included) -> same files."""

    model_config = ConfigDict(extra="forbid")

    # ---- size and layout -----------------------------------------------------------------
    rows_train: int = Field(200_000, ge=1)
    rows_valid: int = Field(20_000, ge=1)
    rows_test: int = Field(20_000, ge=1)
    # Rows buffered before each write (the memory bound; rows are made BLOCK_ROWS at a time).
    # Each write makes equal row groups of at most 100k rows.
    chunk_rows: int = Field(500_000, ge=1)
    # A split with more rows is written as <split>-00000.parquet, <split>-00001.parquet, ...
    rows_per_file: int = Field(50_000_000, ge=1)
    compression: Literal["zstd", "snappy", "none"] = "zstd"
    seed: int = Field(2024, ge=0)

    # ---- features ------------------------------------------------------------------------
    n_dense: int = Field(13, ge=0)
    # Categorical fields including ``user`` and ``item``; the other n_categorical - 2 are C1...
    n_categorical: int = Field(26, ge=2)
    # Vocabulary sizes of C1 .. C{n_categorical-2}: log-uniform from vocab_min to vocab_max,
    # unless vocab_sizes lists them explicitly.
    vocab_min: int = Field(10, ge=2)
    vocab_max: int = Field(100_000, ge=2)
    vocab_sizes: list[int] | None = None
    n_users: int = Field(100_000, ge=2)
    n_items: int = Field(50_000, ge=2)
    n_tags: int = Field(1_000, ge=2)
    max_tags: int = Field(4, ge=1)
    seq_len: int = Field(20, ge=1)  # longest item history
    zipf_exponent: float = Field(1.15, gt=0.0)
    # Users are less skewed (with 1.15 the top user alone would have ~14% of all rows).
    user_zipf_exponent: float = Field(0.9, gt=0.0)
    n_item_clusters: int = Field(50, ge=1)
    # Probability that a target or history item comes from the user's home cluster.
    cluster_affinity: float = Field(0.5, ge=0.0, le=1.0)
    # Shares of the user / item latent variance from the cluster and from the attribute fields
    # (the rest is the id's own): how much the interactions generalise beyond the raw ids.
    cluster_share: float = Field(0.3, ge=0.0, le=1.0)
    attribute_share: float = Field(0.4, ge=0.0, le=1.0)
    dense_missing_max: float = Field(0.45, ge=0.0, lt=1.0)
    id_type: Literal["str", "int"] = "str"

    # ---- planted model -------------------------------------------------------------------
    latent_dim: int = Field(8, ge=1)
    n_pairs: int = Field(8, ge=0)  # FM-style field pairs (the first two: user x item, user x tags)
    # Only fields with at most this many ids (and user, item, tags) take part in the pairs and
    # make up the attribute part of user / item latents; larger fields act first-order only.
    interaction_vocab_max: int = Field(2_000, ge=2)
    # Standard deviation (in logits) of each component; 0 switches it off.
    first_order_scale: float = Field(0.8, ge=0.0)
    pairwise_scale: float = Field(0.9, ge=0.0)
    triple_scale: float = Field(0.5, ge=0.0)
    mlp_scale: float = Field(0.5, ge=0.0)
    dense_scale: float = Field(0.6, ge=0.0)
    seq_scale: float = Field(0.6, ge=0.0)
    target_ctr: float = Field(0.2, gt=0.0, lt=1.0)

    # ---- schema --------------------------------------------------------------------------
    # Fields with a larger vocabulary are hashed in the schema (None: never).
    hash_above: int | None = Field(50_000, ge=1)
    dense_encoding: Literal["log1p", "bucketize"] = "log1p"

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        if self.vocab_max < self.vocab_min:
            raise ValueError(f"vocab_max ({self.vocab_max}) < vocab_min ({self.vocab_min})")
        if self.vocab_sizes is not None:
            if len(self.vocab_sizes) != self.n_categorical - 2:
                raise ValueError(
                    f"vocab_sizes has {len(self.vocab_sizes)} entries, need n_categorical - 2 = "
                    f"{self.n_categorical - 2}"
                )
            if min(self.vocab_sizes, default=2) < 2:
                raise ValueError("every vocab_sizes entry must be >= 2")
        if self.cluster_share + self.attribute_share > 1.0:
            raise ValueError("cluster_share + attribute_share must be <= 1")
        if self.n_item_clusters > self.n_items:
            raise ValueError(f"n_item_clusters ({self.n_item_clusters}) > n_items ({self.n_items})")
        return self

    def rows(self, split: str) -> int:
        return {"train": self.rows_train, "valid": self.rows_valid, "test": self.rows_test}[split]


# ---- field layout (shared by the generator and the schema) ------------------------------------


@dataclass(frozen=True)
class _Field:
    name: str
    vocab: int
    side: Literal["user", "item", "context"]


def _generic_vocabs(cfg: SyntheticConfig) -> list[int]:
    m = cfg.n_categorical - 2
    if cfg.vocab_sizes is not None:
        return list(cfg.vocab_sizes)
    if m == 1:
        return [cfg.vocab_max]
    ratio = cfg.vocab_max / cfg.vocab_min
    return [round(cfg.vocab_min * ratio ** (k / (m - 1))) for k in range(m)]


def _fields(cfg: SyntheticConfig) -> list[_Field]:
    """user, item, C1 .. : C1, C4, .. describe the user, C2, C5, .. the item, C3, C6, .. context."""
    sides = ("user", "item", "context")
    out = [_Field("user", cfg.n_users, "user"), _Field("item", cfg.n_items, "item")]
    out += [_Field(f"C{k + 1}", v, sides[k % 3]) for k, v in enumerate(_generic_vocabs(cfg))]
    return out


def _dense_names(cfg: SyntheticConfig) -> list[str]:
    return [f"I{j + 1}" for j in range(cfg.n_dense)]


def _columns(cfg: SyntheticConfig) -> list[str]:
    return (
        ["click"]
        + [f.name for f in _fields(cfg)]
        + _dense_names(cfg)
        + ["tags", "hist_items", "bayes_p"]
    )


def _arrow_schema(cfg: SyntheticConfig) -> pa.Schema:
    id_t = pa.string() if cfg.id_type == "str" else pa.int64()
    cols = [pa.field("click", pa.int8(), nullable=False)]
    cols += [pa.field(f.name, id_t, nullable=False) for f in _fields(cfg)]
    cols += [pa.field(n, pa.int64()) for n in _dense_names(cfg)]
    cols += [pa.field("tags", pa.string(), nullable=False), pa.field("hist_items", pa.string())]
    cols += [pa.field("bayes_p", pa.float64(), nullable=False)]
    return pa.schema(cols)


# ---- schema ----------------------------------------------------------------------------------


def schema(cfg: SyntheticConfig | None = None) -> Schema:
    """The feature schema of data written by ``generate(cfg, ...)``.

    Parquet source (``bayes_p`` is deliberately not a column of it), split by files, label
    ``click``, group key ``user``. Categorical fields get a vocabulary (min_count 1) or, above
    ``hash_above`` ids, hash buckets; dense counts are log1p-normalised (or log-bucketized);
    ``tags`` is a bag, ``hist_items`` a sequence sharing ``item``'s table. Feature groups:
    ``user`` (user, its attributes, the history), ``item`` (item, its attributes, tags),
    ``context`` and ``dense``.
    """
    cfg = cfg or SyntheticConfig()
    id_raw = "str" if cfg.id_type == "str" else "int"
    fields = _fields(cfg)
    dense = _dense_names(cfg)
    columns = [RawColumn(name="click", type="int", required=True)]
    columns += [RawColumn(name=f.name, type=id_raw, required=True) for f in fields]
    columns += [RawColumn(name=n, type="int") for n in dense]
    columns += [RawColumn(name="tags", type="str"), RawColumn(name="hist_items", type="str")]

    features: list = []
    for f in fields:
        if cfg.hash_above is not None and f.vocab > cfg.hash_above:
            buckets = 1 << math.ceil(math.log2(_HASH_BUCKET_FACTOR * f.vocab))
            features.append(CategoricalFeature(name=f.name, hash_buckets=buckets))
        else:
            features.append(CategoricalFeature(name=f.name, min_count=1))
    for n in dense:
        if cfg.dense_encoding == "bucketize":
            features.append(NumericalFeature(name=n, bucketize=Bucketize(method="log")))
        else:
            features.append(NumericalFeature(name=n, normalize="log1p", fill_missing=0.0))
    features.append(MultiCategoricalFeature(name="tags", max_len=cfg.max_tags, min_count=1))
    features.append(SequenceFeature(name="hist_items", max_len=cfg.seq_len, share_with="item"))

    groups: dict[str, list[str]] = {
        "user": [f.name for f in fields if f.side == "user"] + ["hist_items"],
        "item": [f.name for f in fields if f.side == "item"] + ["tags"],
        "context": [f.name for f in fields if f.side == "context"],
        "dense": dense,
    }
    return Schema(
        name="synthetic",
        source=SourceSpec(format="parquet", columns=columns),
        labels=[LabelSpec(name="click")],
        features=features,
        group_key="user",
        feature_groups={k: v for k, v in groups.items() if v},
        split=SplitSpec(method="files"),
    )


# ---- the planted model -----------------------------------------------------------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


class _ZipfSampler:
    """Exact inverse-CDF sampling of a bounded Zipf law, several times faster than a plain
    ``searchsorted`` over the whole CDF.

    A guide table over ``M`` (a power of two, so ``floor(u * M)`` is exact) equal slices of
    [0, 1) holds, per slice, the range of ids whose CDF step can contain ``u``; only draws whose
    slice spans more than one id need a (short, vectorised) binary search. The result equals
    ``np.searchsorted(cdf, u, side="right")`` exactly.
    """

    def __init__(self, vocab: int, exponent: float):
        w = np.arange(1, vocab + 1, dtype=np.float64) ** -exponent
        cdf = np.cumsum(w)
        cdf /= cdf[-1]
        self.cdf = cdf
        self.vocab = vocab
        self.m = 1 << min(24, max(4, math.ceil(math.log2(8 * vocab))))
        guide = np.searchsorted(cdf, np.arange(self.m + 1, dtype=np.float64) / self.m, side="right")
        self.guide = np.minimum(guide, vocab - 1).astype(np.int32 if vocab < 2**31 else np.int64)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        shape, u = u.shape, u.ravel()
        k = (u * self.m).astype(np.int64)
        out = self.guide[k].astype(np.int64)
        hi_all = self.guide[k + 1]
        idx = np.flatnonzero(out < hi_all)
        if idx.size:
            lo, hi, uu = out[idx], hi_all[idx].astype(np.int64), u[idx]
            while True:
                active = lo < hi
                if not active.any():
                    break
                mid = (lo + hi) >> 1
                right = self.cdf[mid] <= uu
                lo = np.where(active & right, mid + 1, lo)
                hi = np.where(active & ~right, mid, hi)
            out[idx] = lo
        return out.reshape(shape)


@dataclass
class _Rows:
    """One block of sampled rows (indices, not yet strings)."""

    n: int
    ids: dict[str, np.ndarray]  # field -> int64 ids in [0, vocab)
    dense: np.ndarray  # [n, n_dense] int64 counts
    missing: np.ndarray  # [n, n_dense] bool
    hist_offsets: np.ndarray  # [n + 1] int64
    hist: np.ndarray  # [total] int64 item ids, oldest first within a row


class _Generator:
    """Ground-truth parameters (from the seed) and the block sampler."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        self.fields = _fields(cfg)
        self.vocab = {f.name: f.vocab for f in self.fields}
        self.arrow_schema = _arrow_schema(cfg)
        self._samplers: dict[tuple[int, float], _ZipfSampler] = {}
        rng = _rng(cfg.seed, _PARAM_KEY)
        d, K = cfg.latent_dim, cfg.n_item_clusters
        names = [f.name for f in self.fields]
        context = [f.name for f in self.fields if f.side == "context"]
        others = [n for n in names if n not in ("user", "item")]

        # Structure: users' home clusters and activity, user / item attribute tables.
        self.user_home = rng.integers(0, K, cfg.n_users)
        self.user_act = rng.standard_normal(cfg.n_users)
        self.attr: dict[str, np.ndarray] = {}
        for f in self.fields:
            if f.name in ("user", "item") or f.side == "context":
                continue
            owner = cfg.n_users if f.side == "user" else cfg.n_items
            self.attr[f.name] = self._zipf(rng, f.vocab, owner)

        # Item tags: 1..max_tags distinct Zipf-distributed tags per item, sorted.
        n_tag = 1 + rng.integers(0, cfg.max_tags, cfg.n_items)
        tags = self._zipf(rng, cfg.n_tags, (cfg.n_items, cfg.max_tags))
        tags[np.arange(cfg.max_tags)[None, :] >= n_tag[:, None]] = cfg.n_tags
        tags.sort(axis=1)
        valid = tags < cfg.n_tags
        valid[:, 1:] &= tags[:, 1:] != tags[:, :-1]
        counts = valid.sum(axis=1)
        offsets = np.zeros(cfg.n_items + 1, dtype=np.int32)
        np.cumsum(counts, out=offsets[1:])
        flat = tags[valid]
        tag_lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
        self.item_tags_str = pc.binary_join(pc.cast(tag_lists, pa.list_(pa.string())), "|")
        self.tag_counts = counts

        # First-order weights; field importances vary so a few fields matter most.
        self.w1: dict[str, np.ndarray] = {}
        for n in names:
            importance = rng.uniform(0.2, 1.0)
            self.w1[n] = importance * rng.standard_normal(self.vocab[n])
        w_tags = 0.6 * rng.standard_normal(cfg.n_tags)

        # Latent vectors: every field gets a table; items share their cluster's vector, users
        # their home cluster's, so in-cluster (user, item) pairs have positive affinity.
        cluster = rng.standard_normal((K, d)) / math.sqrt(d)
        self.lat: dict[str, np.ndarray] = {}
        for n in names:
            self.lat[n] = rng.standard_normal((self.vocab[n], d)) / math.sqrt(d)
        # A user's (item's) latent vector = its cluster's + its attributes' + its own, so the
        # interactions generalise to rare users and items through their attributes and history.
        for side, home in (("user", self.user_home), ("item", np.arange(cfg.n_items) % K)):
            attrs = [f.name for f in self.fields[2:] if f.side == side and f.vocab <= cfg.interaction_vocab_max]
            c_share, a_share = cfg.cluster_share, (cfg.attribute_share if attrs else 0.0)
            own = math.sqrt(max(0.0, 1.0 - c_share - a_share)) * self.lat[side]
            self.lat[side] = own + math.sqrt(c_share) * cluster[home]
            if attrs:
                mix = sum(self.lat[a][self.attr[a]] for a in attrs) / math.sqrt(len(attrs))
                self.lat[side] += math.sqrt(a_share) * mix
        lat_tags = rng.standard_normal((cfg.n_tags, d)) / math.sqrt(d)
        # The item's tags, averaged: mean weight and mean latent per item.
        self.item_tag_w = np.zeros(cfg.n_items)
        self.lat["tags"] = np.zeros((cfg.n_items, d))
        for j in range(cfg.max_tags):
            t = np.where(valid[:, j], tags[:, j], 0)
            m = valid[:, j]
            self.item_tag_w += np.where(m, w_tags[t], 0.0)
            self.lat["tags"] += np.where(m[:, None], lat_tags[t], 0.0)
        self.item_tag_w /= counts
        self.lat["tags"] /= counts[:, None]
        # float32 tables: half the memory traffic of the gathers that dominate the model's cost.
        self.lat = {k: v.astype(np.float32) for k, v in self.lat.items()}

        self.recency = (_RECENCY_DECAY ** np.arange(cfg.seq_len + 1)).astype(np.float32)
        # Decimal strings of every id (taken, not formatted, per block); huge fields format.
        self.id_str = {
            n: pc.cast(pa.array(np.arange(self.vocab[n])), pa.string())
            for n in names
            if n == "item" or (cfg.id_type == "str" and self.vocab[n] <= _STR_TABLE_MAX)
        }

        # Which fields interact. A pair of two functions of the same user (or item) would only
        # be a per-user (per-item) effect, so pairs always join different entities.
        entity = {f.name: f.name if f.side == "context" else f.side for f in self.fields}
        entity["tags"] = "item"
        # Besides user and item, only fields small enough to learn from modest data interact.
        cand = [n for n in names if n in ("user", "item") or self.vocab[n] <= cfg.interaction_vocab_max]
        cand.append("tags")
        pairs = [("user", "item"), ("user", "tags")][: cfg.n_pairs]
        rest = [
            (a, b)
            for i, a in enumerate(cand)
            for b in cand[i + 1 :]
            if (a, b) not in pairs and entity[a] != entity[b]
        ]
        if cfg.n_pairs > len(pairs) and rest:
            pick = rng.choice(len(rest), size=min(cfg.n_pairs - len(pairs), len(rest)), replace=False)
            pairs += [rest[i] for i in sorted(pick)]
        self.pairs = pairs
        self.triple_field = context[0] if context else (others[0] if others else "tags")
        self.mlp_field = context[1] if len(context) > 1 else (others[-1] if others else "tags")
        # Dense x categorical: the field whose vocabulary is nearest 1000 (learnable slopes).
        self.dcat_field = min(names, key=lambda n: abs(math.log(self.vocab[n] / 1000.0)))
        self.dcat_slope = rng.standard_normal(self.vocab[self.dcat_field])

        # Dense features: log-normal counts driven by row factors (the first: user activity).
        nd = cfg.n_dense
        self.dense_loc = rng.uniform(-0.5, 5.0, nd)
        self.dense_scale = rng.uniform(0.8, 2.2, nd)
        self.dense_missing = rng.uniform(0.0, cfg.dense_missing_max, nd)
        self.dense_load = 0.7 * rng.standard_normal((_N_FACTORS, nd))
        self.dense_norm = np.sqrt((self.dense_load**2).sum(axis=0) + 1.0)
        self.dense_beta = rng.standard_normal(nd) * 0.5
        self.dense_pick = rng.permutation(nd) if nd else np.zeros(0, dtype=np.int64)
        n_in = 3 * d + min(_MLP_DENSE, nd)
        self.mlp_w1 = rng.standard_normal((n_in, _MLP_HIDDEN)) * (2.0 / math.sqrt(n_in))
        self.mlp_b1 = 0.5 * rng.standard_normal(_MLP_HIDDEN)
        self.mlp_w2 = rng.standard_normal(_MLP_HIDDEN)

        with _single_thread_blas():
            self._calibrate()

    def _calibrate(self) -> None:
        """Standardise every term and solve the bias on a fixed sample of the train law."""
        cfg = self.cfg
        calib = self.sample(_rng(cfg.seed, _CALIB_KEY), _CALIB_ROWS)
        x = np.log1p(np.where(calib.missing, 0, calib.dense).astype(np.float64))
        self.x_mean = x.mean(axis=0)
        self.x_std = np.maximum(x.std(axis=0), 1e-6)
        terms = self._terms(calib)
        self.term_stats = {
            k: (float(v.mean(dtype=np.float64)), float(v.std(dtype=np.float64))) for k, v in terms.items()
        }
        self.group_std = {g: 1.0 for g in _GROUPS}
        raw = self._group_values(terms)
        self.group_std = {g: (float(v.std()) if v.std() > 1e-12 else 1.0) for g, v in raw.items()}
        logit0 = self._logit_no_bias(terms)
        self.bias = 0.0
        self.bias = _solve_bias(logit0, cfg.target_ctr)
        self.calib_logit_std = float(logit0.std())

    # -- sampling --

    def _zipf(self, rng: np.random.Generator, vocab: int, size, exponent: float | None = None) -> np.ndarray:
        """Bounded Zipf: P(id = r) ~ (r + 1) ** -s on 0 .. vocab-1, by exact inverse CDF."""
        key = (vocab, exponent or self.cfg.zipf_exponent)
        sampler = self._samplers.get(key)
        if sampler is None:
            sampler = self._samplers[key] = _ZipfSampler(*key)
        return sampler(rng.random(size))

    def _items(self, rng: np.random.Generator, home: np.ndarray) -> np.ndarray:
        """Items: from the home cluster with prob. cluster_affinity (item % K == cluster), else
        from the global popularity."""
        cfg, n = self.cfg, home.shape[0]
        K = cfg.n_item_clusters
        local = rng.random(n) < cfg.cluster_affinity
        out = np.empty(n, dtype=np.int64)
        n_local = int(np.count_nonzero(local))
        out[local] = home[local] + K * self._zipf(rng, cfg.n_items // K, n_local)
        out[~local] = self._zipf(rng, cfg.n_items, n - n_local)
        return out

    def sample(self, rng: np.random.Generator, n: int) -> _Rows:
        cfg = self.cfg
        user = self._zipf(rng, cfg.n_users, n, cfg.user_zipf_exponent)
        home = self.user_home[user]
        item = self._items(rng, home)
        ids = {"user": user, "item": item}
        for f in self.fields[2:]:
            if f.side == "user":
                ids[f.name] = self.attr[f.name][user]
            elif f.side == "item":
                ids[f.name] = self.attr[f.name][item]
            else:
                ids[f.name] = self._zipf(rng, f.vocab, n)
        nd = cfg.n_dense
        act = self.user_act[user]
        z = act[:, None] * self.dense_load[0]
        for f, other in enumerate(rng.standard_normal((_N_FACTORS - 1, n)), start=1):
            z += other[:, None] * self.dense_load[f]
        z += rng.standard_normal((n, nd))
        z /= self.dense_norm
        logv = self.dense_loc + self.dense_scale * np.clip(z, -6.0, 6.0)
        dense = np.maximum(np.floor(np.exp(logv)) - 1.0, 0.0).astype(np.int64)
        missing = rng.random((n, nd)) < self.dense_missing
        # History: heavier users have longer histories.
        length = rng.binomial(cfg.seq_len, _sigmoid(act - 0.3))
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(length, out=offsets[1:])
        hist = self._items(rng, np.repeat(home, length))
        return _Rows(n, ids, dense, missing, offsets, hist)

    # -- the model --

    def _latent(self, rows: _Rows, name: str) -> np.ndarray:
        if name == "tags":
            return self.lat["tags"][rows.ids["item"]]
        return self.lat[name][rows.ids[name]]

    def _terms(self, rows: _Rows) -> dict[str, np.ndarray]:
        cfg = self.cfg
        x = np.log1p(np.where(rows.missing, 0, rows.dense).astype(np.float64))
        x = (x - self.x_mean) / self.x_std
        item = rows.ids["item"]
        t: dict[str, np.ndarray] = {}
        first = self.item_tag_w[item] + x @ self.dense_beta
        for name, w in self.w1.items():
            first = first + w[rows.ids[name]]
        t["first"] = first
        lat = {n: self._latent(rows, n) for n in {"user", "item", self.triple_field, self.mlp_field}}
        for a, b in self.pairs:
            la = lat[a] if a in lat else self._latent(rows, a)
            lb = lat[b] if b in lat else self._latent(rows, b)
            t[f"pair:{a}*{b}"] = np.einsum("ij,ij->i", la, lb)
        t["triple"] = np.einsum("ij,ij,ij->i", lat["user"], lat["item"], lat[self.triple_field])
        k = min(_MLP_DENSE, cfg.n_dense)
        inp = np.concatenate(
            [lat["user"], lat["item"], lat[self.mlp_field], x[:, self.dense_pick[:k]]], axis=1
        )
        t["mlp"] = np.tanh(inp @ self.mlp_w1 + self.mlp_b1) @ self.mlp_w2
        nd = cfg.n_dense
        if nd:
            p = self.dense_pick
            xs = [x[:, p[j % nd]] for j in range(5)]
            t["dense:prod"] = xs[0] * xs[1]
            t["dense:step"] = (xs[2] > 0.5).astype(np.float64)
            t["dense:dcat"] = xs[3] * self.dcat_slope[rows.ids[self.dcat_field]]
            t["dense:square"] = -(xs[4] ** 2)
        # Sequence: target item latent . recency-weighted mean latent of the history.
        lengths = np.diff(rows.hist_offsets)
        t["seq"] = np.zeros(rows.n)
        if rows.hist.size:
            nz = np.flatnonzero(lengths)
            starts = rows.hist_offsets[nz]
            age = np.repeat(rows.hist_offsets[1:], lengths) - 1 - np.arange(rows.hist.size)
            w = self.recency[age]
            sums = np.add.reduceat(self.lat["item"][rows.hist] * w[:, None], starts, axis=0)
            mean = sums / np.add.reduceat(w, starts)[:, None]
            t["seq"][nz] = np.einsum("ij,ij->i", lat["item"][nz], mean)
        return t

    def _group_values(self, terms: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for g in _GROUPS:
            members = [k for k in terms if k.split(":")[0] == g]
            if not members:
                continue
            acc = np.zeros(terms[members[0]].shape[0])
            for k in members:
                mu, sd = self.term_stats[k]
                acc += (terms[k] - mu) / (sd if sd > 1e-12 else 1.0)
            out[g] = acc / self.group_std[g]
        return out

    def _logit_no_bias(self, terms: dict[str, np.ndarray]) -> np.ndarray:
        cfg = self.cfg
        scale = {
            "first": cfg.first_order_scale,
            "pair": cfg.pairwise_scale,
            "triple": cfg.triple_scale,
            "mlp": cfg.mlp_scale,
            "dense": cfg.dense_scale,
            "seq": cfg.seq_scale,
        }
        values = self._group_values(terms)
        out = np.zeros(next(iter(terms.values())).shape[0])
        for g, v in values.items():
            if scale[g]:
                out += scale[g] * v
        return out

    def prob(self, rows: _Rows) -> np.ndarray:
        return _sigmoid(self.bias + self._logit_no_bias(self._terms(rows)))

    # -- output --

    def block(self, split: str, index: int, n: int) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
        """Rows ``index * BLOCK_ROWS ..`` of ``split``: (record batch, p float64, label uint8)."""
        with _single_thread_blas():
            rng = _rng(self.cfg.seed, _SPLIT_KEY[split], index)
            rows = self.sample(rng, n)
            p = self.prob(rows)
            label = (rng.random(n) < p).astype(np.uint8)
            return self._record_batch(rows, p, label), p, label

    def _record_batch(self, rows: _Rows, p: np.ndarray, label: np.ndarray) -> pa.RecordBatch:
        cfg = self.cfg
        arrays: list[pa.Array] = [pa.array(label.astype(np.int8))]
        for f in self.fields:
            ids = pa.array(rows.ids[f.name])
            if cfg.id_type == "int":
                arrays.append(ids)
            elif f.name in self.id_str:
                arrays.append(self.id_str[f.name].take(ids))
            else:
                arrays.append(pc.cast(ids, pa.string()))
        for j in range(cfg.n_dense):
            arrays.append(pa.array(rows.dense[:, j], mask=rows.missing[:, j]))
        arrays.append(self.item_tags_str.take(pa.array(rows.ids["item"])))
        lengths = np.diff(rows.hist_offsets)
        hist = pa.ListArray.from_arrays(
            pa.array(rows.hist_offsets.astype(np.int32)),
            self.id_str["item"].take(pa.array(rows.hist)),
            mask=pa.array(lengths == 0),
        )
        arrays.append(pc.binary_join(hist, "|"))
        arrays.append(pa.array(p))
        return pa.RecordBatch.from_arrays(arrays, schema=self.arrow_schema)

    def summary(self) -> dict:
        return {
            "bias": self.bias,
            "pairs": [list(p) for p in self.pairs],
            "triple_field": self.triple_field,
            "mlp_field": self.mlp_field,
            "dense_x_categorical_field": self.dcat_field,
            "calibration_logit_std": self.calib_logit_std,
            "vocab_sizes": {f.name: f.vocab for f in self.fields} | {"tags": self.cfg.n_tags},
            "field_side": {f.name: f.side for f in self.fields},
            "dense_missing_rate": [float(v) for v in self.dense_missing],
        }


_BLAS = None


def _single_thread_blas():
    """Run the few matrix products single-threaded: on a small or busy machine OpenBLAS's
    spinning worker threads make them 10-20x slower, and one thread also keeps the results
    independent of the thread count. A no-op without threadpoolctl (a scikit-learn dependency)."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        except ImportError:  # pragma: no cover - optional
            _BLAS = False
    return _BLAS.limit(limits=1, user_api="blas") if _BLAS else contextlib.nullcontext()


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _solve_bias(logit: np.ndarray, target: float) -> float:
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _sigmoid(logit + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


# ---- streaming ---------------------------------------------------------------------------------


def _blocks(split_rows: int) -> Iterator[tuple[int, int]]:
    for index, start in enumerate(range(0, split_rows, BLOCK_ROWS)):
        yield index, min(BLOCK_ROWS, split_rows - start)


def iter_batches(cfg: SyntheticConfig, split: str) -> Iterator[pa.RecordBatch]:
    """The rows of one split as Arrow record batches of ``BLOCK_ROWS`` rows, without files.

    Exactly the rows ``generate`` writes (same columns, same order).
    """
    gen = _Generator(cfg)
    for index, n in _blocks(cfg.rows(split)):
        yield gen.block(split, index, n)[0]


def split_files(cfg: SyntheticConfig, split: str) -> list[str]:
    """File names (relative to the output directory) that hold ``split``, in row order."""
    n_files = -(-cfg.rows(split) // cfg.rows_per_file)
    if n_files == 1:
        return [f"{split}.parquet"]
    return [f"{split}-{i:05d}.parquet" for i in range(n_files)]


class _SplitWriter:
    """Buffers record batches and writes them in chunks of ``chunk_rows`` rows, rolling over to
    a new file every ``rows_per_file`` rows. Files are written under a temporary name and
    renamed when complete."""

    def __init__(self, cfg: SyntheticConfig, out_dir: Path, split: str):
        self.cfg, self.out_dir = cfg, out_dir
        self.names = split_files(cfg, split)
        self.schema = _arrow_schema(cfg)
        self.file_idx = 0
        self.in_file = 0
        self.buf: list[pa.RecordBatch] = []
        self.buf_rows = 0
        self.writer: pq.ParquetWriter | None = None

    def _tmp(self, name: str) -> Path:
        return self.out_dir / f".{name}.tmp"

    def _open(self) -> None:
        comp = None if self.cfg.compression == "none" else self.cfg.compression
        self.writer = pq.ParquetWriter(self._tmp(self.names[self.file_idx]), self.schema, compression=comp)

    def _flush(self) -> None:
        if not self.buf_rows:
            return
        assert self.writer is not None
        table = pa.Table.from_batches(self.buf, schema=self.schema)
        n_groups = -(-self.buf_rows // _MAX_ROW_GROUP)
        self.writer.write_table(table, row_group_size=-(-self.buf_rows // n_groups))
        self.in_file += self.buf_rows
        self.buf, self.buf_rows = [], 0

    def _close_file(self) -> None:
        self._flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            name = self.names[self.file_idx]
            self._tmp(name).replace(self.out_dir / name)
            self.file_idx += 1
            self.in_file = 0

    def add(self, batch: pa.RecordBatch) -> None:
        off = 0
        while off < batch.num_rows:
            if self.writer is None:
                self._open()
            room = min(self.cfg.rows_per_file - self.in_file, self.cfg.chunk_rows) - self.buf_rows
            piece = batch.slice(off, min(room, batch.num_rows - off))
            self.buf.append(piece)
            self.buf_rows += piece.num_rows
            off += piece.num_rows
            if self.in_file + self.buf_rows >= self.cfg.rows_per_file:
                self._close_file()
            elif self.buf_rows >= self.cfg.chunk_rows:
                self._flush()

    def close(self) -> None:
        self._close_file()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        for name in self.names:
            self._tmp(name).unlink(missing_ok=True)


def _pack_scores(p: np.ndarray, label: np.ndarray) -> np.ndarray:
    """uint64 keys ``bits(float32 p) << 1 | label``: sorting them sorts by p (the bit pattern of
    a non-negative float orders like its value) with each row's label alongside."""
    bits = p.astype(np.float32).view(np.uint32).astype(np.uint64)
    return (bits << np.uint64(1)) | label.astype(np.uint64)


def _packed_auc(keys: np.ndarray, step: int = 1 << 20) -> float:
    """Exact tie-aware AUC (ties count 1/2, as ``rankmixer.core.metrics.auc`` and sklearn) of
    float32 scores packed by :func:`_pack_scores`. Sorts ``keys`` in place and walks them in
    slices that end on a score boundary, so beyond the 8 bytes/row of keys it needs only
    ~40 bytes per row of one slice (40 MB) (``metrics.auc`` needs ~40 bytes/row for its argsort and per-tie arrays:
    4 GB at 100M rows)."""
    keys.sort()
    n = keys.shape[0]
    twice, neg_below, start = 0, 0, 0
    while start < n:
        end = min(n, start + step)
        if end < n:
            # Move the end back to the start of the score run containing keys[end]; if that run
            # begins at ``start`` (a run longer than step), take the whole run instead.
            score = keys[end] >> np.uint64(1)
            end = int(np.searchsorted(keys, score << np.uint64(1), side="left"))
            if end <= start:
                end = int(np.searchsorted(keys, (score << np.uint64(1)) | np.uint64(1), side="right"))
        chunk = keys[start:end]
        scores = chunk >> np.uint64(1)
        runs = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])
        pos = np.add.reduceat((chunk & np.uint64(1)).astype(np.int64), runs)
        neg = np.diff(np.r_[runs, chunk.shape[0]]) - pos
        below = np.cumsum(neg) - neg + neg_below
        twice += 2 * int(np.dot(pos, below)) + int(np.dot(pos, neg))
        neg_below += int(neg.sum())
        start = end
    n_neg = neg_below
    n_pos = n - n_neg
    if n_pos == 0 or n_neg == 0:
        return math.nan
    return twice / (2.0 * n_pos * n_neg)


def _remove_old_files(out_dir: Path, split: str) -> None:
    for path in [out_dir / f"{split}.parquet", *out_dir.glob(f"{split}-[0-9][0-9][0-9][0-9][0-9].parquet")]:
        path.unlink(missing_ok=True)


def generate(cfg: SyntheticConfig | dict | None, out_dir: str | Path, progress: bool = True) -> dict:
    """Write the train / valid / test Parquet files, ``schema.yaml`` and ``synthetic_meta.json``
    into ``out_dir`` and return the meta dict (see the module docstring for the layout).

    Memory: one chunk of ``chunk_rows`` rows (at least one block of ``BLOCK_ROWS``; about
    400 bytes a row with the default columns), the ground-truth tables (about
    4 * latent_dim + 16 bytes per id of every field), and for the exact Bayes AUC 8 bytes per
    row of the split being written (float32 p and the label packed in a uint64, sorted in
    place at the end of the split: 800 MB at 100M rows).
    """
    from rankmixer.core.metrics import logloss

    if cfg is None:
        cfg = SyntheticConfig()
    elif isinstance(cfg, dict):
        cfg = SyntheticConfig.model_validate(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The meta marks a complete data set: gone until this run has written every file.
    (out_dir / META_FILE).unlink(missing_ok=True)
    t0 = time.perf_counter()
    gen = _Generator(cfg)
    t_setup = time.perf_counter() - t0
    dump_schema(schema(cfg), out_dir / SCHEMA_FILE)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.rows_train + cfg.rows_valid + cfg.rows_test, unit="rows", unit_scale=True,
                   desc="synthetic", file=sys.stderr)
    splits: dict[str, dict] = {}
    try:
        for split in SPLITS:
            rows = cfg.rows(split)
            _remove_old_files(out_dir, split)
            keys = np.empty(rows, dtype=np.uint64)  # float32 p and label, for the exact AUC
            ll_sum = p_sum = 0.0
            n_pos = 0
            writer = _SplitWriter(cfg, out_dir, split)
            if bar is not None:
                bar.set_description(f"synthetic {split}", refresh=False)
            try:
                for index, n in _blocks(rows):
                    batch, p, y = gen.block(split, index, n)
                    start = index * BLOCK_ROWS
                    keys[start : start + n] = _pack_scores(p, y)
                    ll_sum += logloss(y, p) * n  # float64 p, the metrics module's clipping
                    p_sum += float(p.sum())
                    n_pos += int(y.sum())
                    writer.add(batch)
                    if bar is not None:
                        bar.update(n)
            except BaseException:
                writer.abort()  # never leave a partial file under a final name
                raise
            writer.close()
            auc = _packed_auc(keys)
            del keys
            splits[split] = {
                "files": writer.names,
                "rows": rows,
                "label_mean": n_pos / rows,
                "bayes_p_mean": p_sum / rows,
                "bayes_auc": None if math.isnan(auc) else auc,
                "bayes_logloss": ll_sum / rows,
            }
    finally:
        if bar is not None:
            bar.close()

    seconds = time.perf_counter() - t0
    total = sum(s["rows"] for s in splits.values())
    meta = {
        "dataset": "synthetic",
        "format_version": 1,
        "config": cfg.model_dump(mode="json"),
        "columns": _columns(cfg),
        "label": "click",
        "prob_column": "bayes_p",
        "splits": splits,
        "planted_model": gen.summary(),
        "generation_seconds": round(seconds, 3),
        "setup_seconds": round(t_setup, 3),
        "rows_per_second": round(total / seconds, 1),
    }
    tmp = out_dir / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(out_dir / META_FILE)
    return meta


def load_meta(out_dir: str | Path) -> dict:
    path = Path(out_dir) / META_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: generate the data first (rankmixer.data.datasets.synthetic)")
    return json.loads(path.read_text())


def config_from_dir(out_dir: str | Path) -> SyntheticConfig:
    """The config a directory was generated with (from its ``synthetic_meta.json``)."""
    return SyntheticConfig.model_validate(load_meta(out_dir)["config"])


# ---- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m rankmixer.data.datasets.synthetic", description="Generate the synthetic CTR dataset."
    )
    ap.add_argument("out_dir")
    ap.add_argument("--rows-train", type=int)
    ap.add_argument("--rows-valid", type=int)
    ap.add_argument("--rows-test", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--chunk-rows", type=int)
    ap.add_argument("--rows-per-file", type=int)
    ap.add_argument("--config", help="JSON object of further SyntheticConfig fields")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    fields = json.loads(args.config) if args.config else {}
    for k in ("rows_train", "rows_valid", "rows_test", "seed", "chunk_rows", "rows_per_file"):
        if getattr(args, k) is not None:
            fields[k] = getattr(args, k)
    meta = generate(SyntheticConfig.model_validate(fields), args.out_dir, progress=not args.quiet)
    summary = {s: {k: v[k] for k in ("rows", "label_mean", "bayes_auc", "bayes_logloss")} for s, v in meta["splits"].items()}
    print(json.dumps({"out_dir": str(args.out_dir), "splits": summary,
                      "rows_per_second": meta["rows_per_second"]}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
