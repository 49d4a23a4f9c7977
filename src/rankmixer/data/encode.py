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
* Behaviour features: each per-position field like a sequence of its kind (a categorical field
  through its own or a shared vocabulary, a numeric one through its buckets), every field cut
  to the same most recent ``max_len`` positions; the behaviour's own column is that length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from rankmixer.data.behaviour import split_behaviour
from rankmixer.data.feature_map import (
    GROUP_COLUMN,
    TIME_COLUMN,
    BehaviourFieldInfo,
    FeatureInfo,
    FeatureMap,
    behaviour_column,
    teacher_column,
)
from rankmixer.data.reader import BadInputError
from rankmixer.data.schema import (
    FIRST_ID,
    OOV_ID,
    BehaviourFeature,
    BehaviourField,
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
    """Bags and sequences as List[str] under the feature's name (strings split on separator);
    each field of a behaviour as an aligned List[str] under its prepared column name (see
    :func:`rankmixer.data.behaviour.split_behaviour`)."""
    behaviours = [f for f in schema.features if isinstance(f, BehaviourFeature)]
    if behaviours:
        dtypes = lf.collect_schema()
        lf = lf.with_columns([e for f in behaviours for e in split_behaviour(f, dtypes)])
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


def _vocab_options(owner) -> tuple[int, int | None, int | None]:
    """(min_count, max_size, hash_buckets) of a table's owner: a feature or a behaviour field
    (log-bucketized ones take the bucketizer's min_count and are never capped nor hashed)."""
    if isinstance(owner, (NumericalFeature, BehaviourField)) and owner.bucketize is not None:
        return owner.bucketize.min_count, None, None
    return owner.min_count, owner.max_size, owner.hash_buckets


def _vocab_sources(schema: Schema) -> dict[str, tuple[object, list[tuple[pl.Expr, bool]]]]:
    """Every table that needs a vocabulary (or hashing) -> (its owner, the values counted into
    it as (expression, is a list)): a shared table gets its owner's and its sharers' values."""
    owners = {f.name: f for f in schema.features}
    tables: dict[str, tuple[object, list[tuple[pl.Expr, bool]]]] = {}

    def add(table: str, owner, expr: pl.Expr, is_list: bool) -> None:
        tables.setdefault(table, (owner, []))[1].append((expr, is_list))

    for f in schema.features:
        if isinstance(f, BehaviourFeature):
            for b in f.read_fields:
                col = behaviour_column(f.name, b.name)
                if b.bucketize is None:
                    add(b.share_with or col, owners[b.share_with] if b.share_with else b, pl.col(col), True)
                elif b.bucketize.method == "log":
                    add(col, b, pl.col(col).list.eval(_log_bucket(pl.element())), True)
            continue
        if isinstance(f, NumericalFeature) and (f.bucketize is None or f.bucketize.method == "quantile"):
            continue
        table = getattr(f, "share_with", None) or f.name
        add(table, owners[table], *_value_expr(schema, f))
    return tables


def _quantile_boundaries(values: pl.LazyFrame, num_buckets: int) -> list[float]:
    """Distinct training quantiles at 1/n .. (n-1)/n of the single column ``v`` of ``values``."""
    qs = [i / num_buckets for i in range(1, num_buckets)]
    row = values.select([pl.col("v").quantile(q, "nearest").alias(str(i)) for i, q in enumerate(qs)]).collect(
        engine="streaming"
    )
    return sorted({float(v) for v in row.row(0) if v is not None})


def _quantile_ids(v: pl.Expr, bounds: list[float]) -> pl.Expr:
    """Bucket id of the number ``v``: FIRST_ID + how many boundaries it exceeds; null -> OOV."""
    idx = pl.lit(0, pl.Int32)
    for b in bounds:  # few boundaries: a sum of comparisons is simple and streams
        idx = idx + (v > b).cast(pl.Int32)
    return pl.when(v.is_null()).then(OOV_ID).otherwise(idx + FIRST_ID).cast(pl.Int32)


def fit_statistics(train: pl.LazyFrame, schema: Schema) -> Fitted:
    """Vocabularies (counted over the owner's and its sharers' values) and numerical
    statistics of the training split, as the schema asks for them."""
    vocabs: dict[str, pl.DataFrame] = {}
    numeric: dict[str, dict] = {}
    for table, (owner, sources) in _vocab_sources(schema).items():
        min_count, max_size, hash_buckets = _vocab_options(owner)
        if hash_buckets:
            continue  # hashing needs no vocabulary
        parts = []
        for expr, is_list in sources:
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
        counts = counts.filter(pl.col("count") >= min_count).sort(["count", "value"], descending=[True, False])
        if max_size:
            counts = counts.head(max_size)
        vocabs[table] = counts.with_columns(
            (pl.int_range(pl.len(), dtype=pl.Int32) + FIRST_ID).alias("id")
        ).select("value", "id", "count")

    for f in schema.features:
        if not isinstance(f, BehaviourFeature):
            continue
        for b in f.fields:
            if b.bucketize is not None and b.bucketize.method == "quantile":
                col = behaviour_column(f.name, b.name)
                values = train.select(pl.col(col).list.eval(pl.element().cast(pl.Float64))
                                     .explode(empty_as_null=True).alias("v"))
                numeric[col] = {"boundaries": _quantile_boundaries(values, b.bucketize.num_buckets),
                                "missing_rate": None}

    for f in schema.features:
        if not isinstance(f, NumericalFeature):
            continue
        col = pl.col(f.column).cast(pl.Float64)
        if f.bucketize is not None and f.bucketize.method == "quantile":
            bounds = _quantile_boundaries(train.select(col.alias("v")), f.bucketize.num_buckets)
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
        for b in f.fields:  # a behaviour's quantile-bucketized fields
            if b.stats.get("bucketize") == "quantile":
                numeric[b.table] = {"boundaries": b.stats["boundaries"]}
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
    sparse, dense, bags, seqs, behaviours = [], [], [], [], []
    exprs = []
    for f in schema.features:
        if isinstance(f, BehaviourFeature):
            field_exprs, info = _encode_behaviour(f, fitted, owners)
            exprs += field_exprs
            behaviours.append(info)
            continue
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
                exprs.append(_quantile_ids(pl.col(f.column).cast(pl.Float64), bounds).alias(f.name))
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
    # Teacher predictions: training rows carry them (preparation requires the columns); rows
    # scored later (predict, serving) have none, which reads as NaN.
    have = set(lf.collect_schema().names()) if schema.teacher_columns else set()
    for lab in schema.labels:
        if lab.name in schema.teacher_columns:
            col = schema.teacher_columns[lab.name]
            value = pl.col(col).cast(pl.Float32).fill_null(float("nan")) if col in have else pl.lit(float("nan"), pl.Float32)
            exprs.append(value.alias(teacher_column(lab.name)))
    return lf.select(exprs), sparse + dense + bags + seqs + behaviours


def _encode_behaviour(f: BehaviourFeature, fitted: Fitted, owners: dict) -> tuple[list[pl.Expr], FeatureInfo]:
    """The id columns of a behaviour's fields (split lists in, most recent ``max_len`` ids out)
    and its length column, with its :class:`FeatureInfo`."""
    exprs, fields = [], []
    for b in f.fields:
        col = behaviour_column(f.name, b.name)
        if b.sessions is not None:  # session index i -> id FIRST_ID + i (already capped)
            ids = pl.col(col).list.eval(pl.element() + FIRST_ID).cast(pl.List(pl.Int32))
            info = BehaviourFieldInfo(b.name, col, FIRST_ID + b.sessions.max_sessions,
                                      stats={"sessions": b.sessions.model_dump()})
        elif b.bucketize is not None and b.bucketize.method == "quantile":
            bounds = fitted.numeric[col]["boundaries"]
            ids = pl.col(col).list.eval(_quantile_ids(pl.element().cast(pl.Float64), bounds))
            info = BehaviourFieldInfo(b.name, col, FIRST_ID + len(bounds) + 1,
                                      stats={"bucketize": "quantile", "boundaries": bounds})
        elif b.bucketize is not None:
            vocab = fitted.vocabs[col]
            ids = _encode_ids(pl.col(col).list.eval(_log_bucket(pl.element())), vocab, None, True)
            info = BehaviourFieldInfo(b.name, col, FIRST_ID + vocab.height,
                                      stats={"bucketize": "log", "vocab_size": vocab.height})
        else:
            table = b.share_with or col
            buckets = (owners[b.share_with] if b.share_with else b).hash_buckets
            vocab = fitted.vocabs.get(table)
            ids = _encode_ids(pl.col(col), vocab, buckets, True)
            info = BehaviourFieldInfo(b.name, table, FIRST_ID + (buckets if buckets else vocab.height),
                                      share_with=b.share_with,
                                      stats={"hash_buckets": buckets} if buckets else {"vocab_size": vocab.height})
        # Raw lists are oldest first: the most recent positions are the last ones.
        exprs.append(ids.list.tail(f.max_len).alias(col))
        fields.append(info)
    first = behaviour_column(f.name, f.fields[0].name)
    exprs.append(pl.col(first).list.len().clip(upper_bound=f.max_len).cast(pl.Int32).alias(f.name))
    return exprs, FeatureInfo(f.name, "behaviour", max_len=f.max_len, fields=fields)
