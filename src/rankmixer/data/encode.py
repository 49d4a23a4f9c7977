"""The encoder: canonical rows -> model ids and values, with statistics fitted on the training
split. One implementation for preparation, ``rankmixer predict`` and serving (which encodes a
request's raw values exactly as preparation encoded the training rows).

* Vocabularies: every categorical-like feature's values counted on the training split (a shared
  table counts its owner's and sharers' values together), ``min_count`` and ``max_size``
  applied, ids from ``FIRST_ID`` by descending count; unseen values map to ``OOV_ID``.
* Hashed features: FNV-1a 64 of the value's UTF-8 bytes (not polars' hash, which may change
  between versions) modulo the bucket count.
* Numerical features: normalised with training mean/std (optionally after a signed log1p), or
  bucketized (Criteo's log buckets through a vocabulary, or training quantiles).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from rankmixer.data.feature_map import GROUP_COLUMN, TIME_COLUMN, FeatureInfo, FeatureMap
from rankmixer.data.reader import BadInputError
from rankmixer.data.schema import (
    FIRST_ID,
    OOV_ID,
    CategoricalFeature,
    MultiCategoricalFeature,
    NumericalFeature,
    Schema,
    SequenceFeature,
)

__all__ = ["Fitted", "encode_features", "fit_statistics", "fnv1a64", "load_fitted", "signed_log1p", "split_lists"]


# ---------------------------------------------------------------------------------------------
# Stable hashing (polars' own hash may change between versions; a served model must hash a raw
# value exactly as preparation did, so we use FNV-1a 64 on the UTF-8 bytes).
# ---------------------------------------------------------------------------------------------
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def fnv1a64(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """FNV-1a 64-bit hash of each string (nulls hash like the empty string), vectorised over
    byte positions: cost is O(rows x longest string)."""
    arr = pa.array(values, type=pa.large_string()) if not isinstance(values, pa.Array) else values
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string()).fill_null("")
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8) if arr.buffers()[2] is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], offsets[1:] - offsets[:-1]
    h = np.full(len(arr), _FNV_OFFSET, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(int(lengths.max(initial=0))):
            live = lengths > k
            byte = data[starts[live] + k].astype(np.uint64)
            h[live] = (h[live] ^ byte) * _FNV_PRIME
    return h


def _hash_to_ids(s: pl.Series, buckets: int) -> pl.Series:
    """Hashed id in [FIRST_ID, FIRST_ID + buckets); missing -> OOV."""
    as_str = s.cast(pl.Utf8)
    h = fnv1a64(as_str.to_arrow())
    ids = (h % np.uint64(buckets)).astype(np.int64) + FIRST_ID
    ids[as_str.is_null().to_numpy()] = OOV_ID
    return pl.Series(s.name, ids, dtype=pl.Int32)



# ---------------------------------------------------------------------------------------------
# Numerical transforms
# ---------------------------------------------------------------------------------------------
def _log_bucket(expr: pl.Expr) -> pl.Expr:
    """Criteo convention: v > 2 -> floor(ln(v)^2), else int(v). Kept as a string value so the
    bucket goes through the same vocabulary as any categorical value."""
    v = expr.cast(pl.Float64)
    b = pl.when(v > 2).then((v.log() ** 2).floor()).otherwise(v.floor())
    return b.cast(pl.Int64).cast(pl.Utf8)


def signed_log1p(expr: pl.Expr) -> pl.Expr:
    """The ``log1p`` normalisation: sign(v) * ln(1 + |v|)."""
    v = expr.cast(pl.Float64)
    return v.sign() * v.abs().log1p()


@dataclass
class Fitted:
    """Everything fitted on the training split."""

    vocabs: dict[str, pl.DataFrame]  # table name -> (value: str, id: int32)
    numeric: dict[str, dict]  # numerical feature -> stats


def _as_str(expr: pl.Expr) -> pl.Expr:
    """Vocabulary keys are strings, so int and str raw values of the same id agree."""
    return expr.cast(pl.Utf8)


def _value_expr(schema: Schema, f) -> tuple[pl.Expr, bool]:
    """The raw values a categorical-like feature is counted over, and whether it is a list."""
    if isinstance(f, NumericalFeature):
        return _log_bucket(pl.col(f.column)), False
    if isinstance(f, (MultiCategoricalFeature, SequenceFeature)):
        return pl.col(f.name), True
    return _as_str(pl.col(f.column)), False


def split_lists(lf: pl.LazyFrame, schema: Schema) -> pl.LazyFrame:
    """Bags and sequences as List[str] under the feature's name (strings split on separator)."""
    exprs = []
    for f in schema.features:
        if isinstance(f, (MultiCategoricalFeature, SequenceFeature)):
            exprs.append(pl.col(f.column).alias(f.name))
    if not exprs:
        return lf
    lf = lf.with_columns(exprs)
    dtypes = lf.collect_schema()
    fix = []
    for f in schema.features:
        if isinstance(f, (MultiCategoricalFeature, SequenceFeature)):
            dt = dtypes[f.name]
            if dt == pl.Utf8:
                e = pl.col(f.name).str.split(f.separator).list.eval(
                    pl.element().str.strip_chars().filter(pl.element() != "")
                )
            elif isinstance(dt, pl.List):
                e = pl.col(f.name).list.eval(pl.element().cast(pl.Utf8))
            else:
                raise BadInputError(
                    f"feature {f.name!r}: column {f.column!r} must be a string or a list, got {dt}"
                )
            fix.append(e.fill_null(pl.lit([], dtype=pl.List(pl.Utf8))).alias(f.name))
    return lf.with_columns(fix)


def fit_statistics(train: pl.LazyFrame, schema: Schema) -> Fitted:
    """Vocabularies (counted over the owner's and its sharers' values) and numerical
    statistics of the training split, as the schema asks for them."""
    vocabs: dict[str, pl.DataFrame] = {}
    numeric: dict[str, dict] = {}
    owners = {f.name: f for f in schema.features}
    # Values of features that share a table are counted together with the owner's.
    sources: dict[str, list] = {}
    for f in schema.features:
        if isinstance(f, NumericalFeature) and f.bucketize is None:
            continue
        if isinstance(f, NumericalFeature) and f.bucketize.method == "quantile":
            continue
        table = getattr(f, "share_with", None) or f.name
        sources.setdefault(table, []).append(f)

    for table, feats in sources.items():
        owner = owners[table]
        if getattr(owner, "hash_buckets", None):
            continue  # hashing needs no vocabulary
        parts = []
        for f in feats:
            expr, is_list = _value_expr(schema, f)
            q = train.select(expr.alias("value"))
            if is_list:
                q = q.explode("value", empty_as_null=True)
            parts.append(q)
        counts = (
            pl.concat(parts)
            .drop_nulls("value")
            .group_by("value")
            .agg(pl.len().alias("count"))
            .collect(engine="streaming")
        )
        min_count = owner.bucketize.min_count if isinstance(owner, NumericalFeature) else owner.min_count
        counts = counts.filter(pl.col("count") >= min_count).sort(["count", "value"], descending=[True, False])
        max_size = getattr(owner, "max_size", None)
        if max_size:
            counts = counts.head(max_size)
        vocabs[table] = counts.with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int32) + FIRST_ID).alias("id")
        ).select("value", "id", "count")

    for f in schema.features:
        if not isinstance(f, NumericalFeature):
            continue
        col = pl.col(f.column).cast(pl.Float64)
        if f.bucketize is not None and f.bucketize.method == "quantile":
            nb = f.bucketize.num_buckets
            qs = [i / nb for i in range(1, nb)]
            row = train.select([col.quantile(q, "nearest").alias(str(i)) for i, q in enumerate(qs)]).collect(
                engine="streaming"
            )
            bounds = sorted({float(v) for v in row.row(0) if v is not None})
            numeric[f.name] = {"boundaries": bounds, "missing_rate": None}
            continue
        if f.bucketize is not None:
            continue
        filled = col.fill_null(f.fill_missing)
        if f.normalize == "log1p":
            filled = signed_log1p(filled)
        st = train.select(
            filled.mean().alias("mean"),
            filled.std().alias("std"),
            filled.min().alias("min"),
            filled.max().alias("max"),
            col.is_null().mean().alias("missing_rate"),
        ).collect(engine="streaming").row(0, named=True)
        numeric[f.name] = {k: (float(v) if v is not None else 0.0) for k, v in st.items()}
    return Fitted(vocabs, numeric)


def load_fitted(prepared_dir: Path, fm: FeatureMap) -> Fitted:
    """The training statistics of a prepared dataset, read back from its directory."""
    vocabs = {p.stem: pl.read_parquet(p) for p in sorted((Path(prepared_dir) / "vocab").glob("*.parquet"))}
    numeric = {}
    for f in fm.features:
        if f.kind == "dense":
            numeric[f.name] = {k: f.stats[k] for k in ("mean", "std", "min", "max", "missing_rate")}
        elif f.stats.get("bucketize") == "quantile":
            numeric[f.name] = {"boundaries": f.stats["boundaries"]}
    return Fitted(vocabs, numeric)


def _encode_ids(expr: pl.Expr, vocab: pl.DataFrame | None, buckets: int | None, is_list: bool) -> pl.Expr:
    if buckets:
        fn = lambda s: _hash_to_ids(s, buckets)  # noqa: E731
        if is_list:
            return expr.list.eval(pl.element().map_batches(fn, return_dtype=pl.Int32, is_elementwise=True))
        return expr.map_batches(fn, return_dtype=pl.Int32, is_elementwise=True)
    assert vocab is not None
    old, new = vocab.get_column("value"), vocab.get_column("id")
    if is_list:
        return expr.list.eval(pl.element().replace_strict(old, new, default=OOV_ID, return_dtype=pl.Int32))
    return expr.replace_strict(old, new, default=OOV_ID, return_dtype=pl.Int32)


def encode_features(lf: pl.LazyFrame, schema: Schema, fitted: Fitted) -> tuple[pl.LazyFrame, list[FeatureInfo]]:
    """Canonical rows (lists already split, see :func:`split_lists`) -> model ids and values
    with the training split's statistics: the one encoder of preparation, ``predict`` and
    serving. Returns the encoded frame and each feature's :class:`FeatureInfo`."""
    owners = {f.name: f for f in schema.features}
    sparse, dense, bags, seqs = [], [], [], []
    exprs = []
    for f in schema.features:
        if isinstance(f, NumericalFeature):
            if f.bucketize is None:
                st = fitted.numeric[f.name]
                v = pl.col(f.column).cast(pl.Float64).fill_null(f.fill_missing)
                if f.normalize == "log1p":
                    v = signed_log1p(v)
                if f.normalize == "standard":
                    v = (v - st["mean"]) / (st["std"] if st["std"] > 0 else 1.0)
                elif f.normalize == "minmax":
                    span = st["max"] - st["min"]
                    v = (v - st["min"]) / (span if span > 0 else 1.0)
                exprs.append(v.cast(pl.Float32).alias(f.name))
                dense.append(FeatureInfo(f.name, "dense", stats={"normalize": f.normalize, **st}))
                continue
            if f.bucketize.method == "quantile":
                bounds = fitted.numeric[f.name]["boundaries"]
                v = pl.col(f.column).cast(pl.Float64)
                idx = pl.lit(0, pl.Int32)
                for b in bounds:  # few boundaries: a sum of comparisons is simple and streams
                    idx = idx + (v > b).cast(pl.Int32)
                exprs.append(pl.when(v.is_null()).then(OOV_ID).otherwise(idx + FIRST_ID).cast(pl.Int32).alias(f.name))
                sparse.append(
                    FeatureInfo(f.name, "sparse", vocab_size=FIRST_ID + len(bounds) + 1,
                                stats={"bucketize": "quantile", "boundaries": bounds})
                )
                continue
            vocab = fitted.vocabs[f.name]
            exprs.append(_encode_ids(_log_bucket(pl.col(f.column)), vocab, None, False).alias(f.name))
            sparse.append(FeatureInfo(f.name, "sparse", vocab_size=FIRST_ID + vocab.height,
                                      stats={"bucketize": "log", "vocab_size": vocab.height}))
            continue

        table = getattr(f, "share_with", None) or f.name
        owner = owners[table]
        buckets = getattr(owner, "hash_buckets", None)
        vocab = fitted.vocabs.get(table)
        size = FIRST_ID + (buckets if buckets else vocab.height)
        stats = {"hash_buckets": buckets} if buckets else {"vocab_size": vocab.height}
        if isinstance(f, CategoricalFeature):
            exprs.append(_encode_ids(_as_str(pl.col(f.column)), vocab, buckets, False).alias(f.name))
            sparse.append(FeatureInfo(f.name, "sparse", vocab_size=size, stats=stats))
        else:
            ids = _encode_ids(pl.col(f.name), vocab, buckets, True)
            # Bags keep their first max_len values; sequences their most recent max_len.
            ids = ids.list.tail(f.max_len) if isinstance(f, SequenceFeature) else ids.list.head(f.max_len)
            exprs.append(ids.alias(f.name))
            info = FeatureInfo(f.name, "sequence" if isinstance(f, SequenceFeature) else "bag",
                               vocab_size=size, max_len=f.max_len, share_with=getattr(f, "share_with", None),
                               stats=stats)
            (seqs if isinstance(f, SequenceFeature) else bags).append(info)
            if isinstance(f, SequenceFeature) and f.timestamps:
                exprs.append(pl.col(f.timestamps).list.eval(pl.element().cast(pl.Int64)).list.tail(f.max_len)
                             .alias(f"{f.name}__ts"))

    for lab in schema.labels:
        exprs.append(pl.col(lab.name).cast(pl.Float32))
    if schema.group_key:
        g = pl.col(schema.group_key)
        exprs.append(g.alias(GROUP_COLUMN))
    if schema.time_column:
        exprs.append(pl.col(schema.time_column).cast(pl.Int64).alias(TIME_COLUMN))
    return lf.select(exprs), sparse + dense + bags + seqs
