"""Preparation: raw files -> type-checked frame -> canonical frame -> splits -> encoded Parquet.

Everything after reading is a Polars lazy query run by the streaming engine, so memory stays
bounded by the vocabularies, not by the data. Every statistic (vocabularies, normalisation,
quantile boundaries) is fitted on the training split only. The result is deterministic: the
same raw files, schema and seed give byte-identical shards on the same library versions.

Output directory (a cache of one dataset: built in a temporary sibling and renamed into place;
refreshed when its inputs change, replaced by another dataset's only with ``force``; never
written over the inputs nor over a folder rankmixer did not write, see core/files.py)::

    .rankmixer-output       the ownership marker
    feature_map.json        what a model needs (see feature_map.py), plus the report
    schema.yaml             the schema that produced it
    vocab/<feature>.parquet value -> id, for scoring raw values later
    train/part-00000.parquet, valid/..., test/...
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from rankmixer.core.files import OutputError, atomic_directory, check_output
from rankmixer.data.datasets.base import DatasetPreset, RawFiles, TransformContext
from rankmixer.data.feature_map import GROUP_COLUMN, TIME_COLUMN, FeatureInfo, FeatureMap, SplitInfo
from rankmixer.data.reader import FILE_COL, ROW_COL, BadInputError, BadRowReport, OnBadRow, read_raw, read_table
from rankmixer.data.schema import (
    FIRST_ID,
    OOV_ID,
    CategoricalFeature,
    MultiCategoricalFeature,
    NumericalFeature,
    Schema,
    SequenceFeature,
    dump_schema,
)

SPLITS = ("train", "valid", "test")
SPLIT_COL = "__split"
# Small row groups let the loader shuffle at a fine grain (it shuffles row groups, then rows).
ROW_GROUP_SIZE = 16_384
# Bumped whenever the encoding itself changes, so old caches are not reused.
FORMAT_VERSION = 1
PREPARED_KIND = "prepared data"  # the ownership marker's kind (core/files.py)


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
# Deterministic ratio split: a hash of (file, row) that does not depend on the Polars version.
# ---------------------------------------------------------------------------------------------
_P = 2_147_483_647  # 2^31 - 1: products of two residues stay inside int64


def _split_bucket(seed: int) -> pl.Expr:
    """Uniform-looking integer in [0, 10000) per row, from (__file, __row, seed)."""
    x = (pl.col(ROW_COL).cast(pl.Int64) % _P) * 48271 % _P
    x = (x + pl.col(FILE_COL).cast(pl.Int64) * 16807 + seed % _P) % _P
    for mult in (69621, 48271):
        x = (x * mult) % _P
        x = x ^ (x // 8192)
    return x % 10_000


# ---------------------------------------------------------------------------------------------
# Numerical transforms
# ---------------------------------------------------------------------------------------------
def _log_bucket(expr: pl.Expr) -> pl.Expr:
    """Criteo convention: v > 2 -> floor(ln(v)^2), else int(v). Kept as a string value so the
    bucket goes through the same vocabulary as any categorical value."""
    v = expr.cast(pl.Float64)
    b = pl.when(v > 2).then((v.log() ** 2).floor()).otherwise(v.floor())
    return b.cast(pl.Int64).cast(pl.Utf8)


def _signed_log1p(expr: pl.Expr) -> pl.Expr:
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
            filled = _signed_log1p(filled)
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
                    v = _signed_log1p(v)
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


def _group_ids(lf: pl.LazyFrame) -> pl.LazyFrame:
    """Group ids only need equality; strings are hashed (stable FNV) into int64."""
    dt = lf.collect_schema()[GROUP_COLUMN]
    if dt.is_integer():
        return lf.with_columns(pl.col(GROUP_COLUMN).cast(pl.Int64))
    return lf.with_columns(
        pl.col(GROUP_COLUMN).cast(pl.Utf8).map_batches(
            lambda s: pl.Series(s.name, fnv1a64(s.to_arrow()).view(np.int64)), return_dtype=pl.Int64,
            is_elementwise=True,
        )
    )


def _check_labels(lf: pl.LazyFrame, schema: Schema, on_bad_row: OnBadRow, raw_names: list[str],
                  report: BadRowReport) -> pl.LazyFrame:
    bad = pl.lit(False)
    for lab in schema.labels:
        c = pl.col(lab.name)
        bad = bad | c.is_null() | ~c.cast(pl.Float64, strict=False).is_in([0.0, 1.0])
    offenders = lf.filter(bad).select([FILE_COL, ROW_COL] + [lab.name for lab in schema.labels])
    if on_bad_row == "fail":
        first = offenders.head(1).collect()
        if first.height:
            r = first.row(0, named=True)
            vals = {lab.name: r[lab.name] for lab in schema.labels}
            raise BadInputError(
                f"{raw_names[r[FILE_COL]]}: line/row {r[ROW_COL]}: label values {vals} are not in {{0, 1}}"
                " (use --on-bad-row skip to skip such rows)"
            )
        return lf
    n_bad = offenders.select(pl.len()).collect().item()
    if n_bad:
        ex = offenders.head(1).collect().row(0, named=True)
        report.add("label not in {0,1}", n_bad, f"{raw_names[ex[FILE_COL]]}: line/row {ex[ROW_COL]}: {ex}")
    return lf.filter(~bad)


def canonical_rows(schema: Schema, raw: RawFiles, work: Path, preset: DatasetPreset | None, raw_path: Path | None,
                   on_bad_row: OnBadRow) -> tuple[pl.LazyFrame, BadRowReport, list[str]]:
    """Read and type-check the raw files, apply the preset's transform, check the canonical
    columns and labels. Per-split raw files get a ``__split`` column."""
    report = BadRowReport()
    frames, raw_names = [], []
    groups = [("all", raw.all)] if raw.all else [(s, raw.by_split.get(s, [])) for s in SPLITS]
    for split, paths in groups:
        if not paths:
            raise BadInputError(f"no raw files for split {split!r}")
        typed, rep = read_raw(paths, schema.source, work / "typed", on_bad_row, file_offset=len(raw_names))
        report.merge(rep)
        raw_names += [str(p) for p in paths]
        lf = pl.scan_parquet(typed)
        if split != "all":
            lf = lf.with_columns(pl.lit(split).alias(SPLIT_COL))
        frames.append(lf)
    lf = pl.concat(frames, how="vertical")
    if preset is not None:
        # Side tables (MovieLens' movies.csv) are checked like the main file, and their skipped
        # rows are counted in the same report.
        ctx = TransformContext(raw_path=Path(raw_path or "."), on_bad_row=on_bad_row,
                               read_side_table=lambda p, src: read_table(Path(p), src, on_bad_row, report=report),
                               report=report)
        lf = preset.transform(lf, ctx)
    have = set(lf.collect_schema().names())
    missing = [c for c in schema.canonical_columns() if c not in have]
    if missing:
        raise BadInputError(f"columns named in the schema are missing from the data: {missing} (have {sorted(have)})")
    lf = _check_labels(lf, schema, on_bad_row, raw_names, report)
    return split_lists(lf, schema), report, raw_names


def encode_raw(
    fm: FeatureMap,
    schema: Schema,
    raw_files: list[Path],
    out_path: Path,
    *,
    preset: DatasetPreset | None = None,
    raw_path: Path | None = None,
    on_bad_row: OnBadRow = "fail",
) -> BadRowReport:
    """Encode new raw rows with a prepared dataset's vocabularies and statistics (unseen
    values -> OOV), writing one Parquet file in the prepared layout. Used for batch scoring."""
    assert fm.root is not None
    work = out_path.parent / f".{out_path.name}.work"
    work.mkdir(parents=True, exist_ok=True)
    try:
        lf, report, _ = canonical_rows(schema, RawFiles(all=list(raw_files)), work, preset, raw_path, on_bad_row)
        enc, _ = encode_features(lf, schema, load_fitted(fm.root, fm))
        if schema.group_key:
            enc = _group_ids(enc)
        enc.sink_parquet(out_path, row_group_size=ROW_GROUP_SIZE)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _fingerprint(schema: Schema, raw: RawFiles, extra: dict, side: Sequence[Path] = ()) -> str:
    files = [str(p) for p in raw.all] + [f"{k}:{p}" for k, v in sorted(raw.by_split.items()) for p in v]
    stamp = [(f, Path(f.split(":", 1)[-1]).stat().st_size, int(Path(f.split(":", 1)[-1]).stat().st_mtime))
             for f in files]
    if side:  # a preset's side tables (movies.csv) change the prepared data too
        extra = {**extra, "side": [(str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in side]}
    blob = json.dumps({"schema": schema.fingerprint(), "files": stamp, "v": FORMAT_VERSION, **extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _existing_map(out_dir: Path) -> FeatureMap | None:
    """The feature map of prepared data already in ``out_dir``, or None."""
    try:
        return FeatureMap.load(out_dir / "feature_map.json") if (out_dir / "feature_map.json").is_file() else None
    except (ValueError, TypeError, KeyError):
        return None


def _legacy_prepared(out_dir: Path) -> bool:
    """Prepared data written before ownership markers existed: its feature map names its key."""
    fm = _existing_map(out_dir)
    return fm is not None and "prepare_key" in fm.extras


def prepare(
    schema: Schema,
    raw: RawFiles,
    out_dir: str | Path,
    *,
    preset: DatasetPreset | None = None,
    raw_path: Path | None = None,
    on_bad_row: OnBadRow = "fail",
    rows_per_shard: int = 2_000_000,
    force: bool = False,
    log=print,
    inputs: Sequence[Path] = (),
) -> FeatureMap:
    """Prepare a dataset into ``out_dir``; reuses it when it was prepared from the same inputs.

    ``out_dir`` may not be, contain or lie inside any input (raw files, side tables, ``raw_path``,
    ``inputs``). Existing prepared data of the same dataset is refreshed when stale; of another
    dataset it is replaced only with ``force``; a folder rankmixer did not write is refused.
    """
    out_dir = Path(out_dir)
    side = preset.side_files(Path(raw_path)) if preset is not None and raw_path is not None else []
    check_output(out_dir, [*raw.all, *(p for v in raw.by_split.values() for p in v), *side, raw_path, *inputs],
                 "prepared data directory")
    key = _fingerprint(schema, raw, {"on_bad_row": on_bad_row, "preset": preset.name if preset else None}, side)
    name = preset.name if preset else schema.name
    existing = _existing_map(out_dir)
    if existing is not None and not force and existing.extras.get("prepare_key") == key:
        log(f"reusing prepared data in {out_dir} (same schema and raw files)")
        return existing
    if existing is not None and existing.dataset != name and not force:
        raise OutputError(f"{out_dir} holds prepared data of {existing.dataset!r}, not {name!r}: choose another "
                          "output (data.prepared_dir / --out) or pass --force to replace it")
    t0 = time.time()
    with atomic_directory(out_dir, PREPARED_KIND, overwrite=True if existing is not None else force,
                          legacy=_legacy_prepared, flag="--force") as tmp:
        fm = _prepare_into(tmp, schema, raw, preset=preset, raw_path=raw_path, on_bad_row=on_bad_row,
                           rows_per_shard=rows_per_shard, key=key, log=log)
    fm.root = out_dir
    log(f"prepared {out_dir} in {time.time() - t0:.1f}s")
    return fm


def _prepare_into(out_dir: Path, schema: Schema, raw: RawFiles, *, preset: DatasetPreset | None,
                  raw_path: Path | None, on_bad_row: OnBadRow, rows_per_shard: int, key: str, log) -> FeatureMap:
    """Steps 1-4 of the module docstring, writing into the (temporary) directory ``out_dir``."""
    t0 = time.time()
    work = out_dir / "_work"
    work.mkdir(parents=True)

    if schema.split.method == "files" and raw.all:
        raise BadInputError("split method 'files' needs one raw file list per split (train/valid/test)")
    # 1-2. Read and type-check, canonical frame, label checks.
    lf, report, raw_names = canonical_rows(schema, raw, work, preset, raw_path, on_bad_row)
    log(f"read {report.rows_read:,} rows ({report.rows_skipped:,} skipped) in {time.time() - t0:.1f}s")
    by_files = not raw.all

    # 3. Split. Materialise the canonical frame once so the splits, fitting and encoding do not
    # rerun the transform (and its joins/windows) several times.
    canon = work / "canonical.parquet"
    lf.sink_parquet(canon, row_group_size=ROW_GROUP_SIZE)
    lf = pl.scan_parquet(canon)
    if by_files:
        parts = {s: lf.filter(pl.col(SPLIT_COL) == s) for s in SPLITS}
    elif schema.split.method == "time":
        t = pl.col(schema.time_column)
        r_train, r_valid, _ = schema.split.ratios
        q = lf.select(t.quantile(r_train, "lower").alias("a"), t.quantile(r_train + r_valid, "lower").alias("b"))
        a, b = q.collect(engine="streaming").row(0)
        parts = {"train": lf.filter(t < a), "valid": lf.filter((t >= a) & (t < b)), "test": lf.filter(t >= b)}
        log(f"time split at {a} / {b}")
    else:
        r_train, r_valid, _ = schema.split.ratios
        u = _split_bucket(schema.split.seed)
        ca, cb = int(round(r_train * 10_000)), int(round((r_train + r_valid) * 10_000))
        parts = {"train": lf.filter(u < ca), "valid": lf.filter((u >= ca) & (u < cb)), "test": lf.filter(u >= cb)}

    # 4. Fit on train, encode every split, write shards.
    fitted = fit_statistics(parts["train"], schema)
    vocab_dir = out_dir / "vocab"
    vocab_dir.mkdir()
    for table, vocab in fitted.vocabs.items():
        vocab.write_parquet(vocab_dir / f"{table}.parquet")
    splits: dict[str, SplitInfo] = {}
    infos: list[FeatureInfo] = []
    oov: dict[str, dict[str, float]] = {}
    for split in SPLITS:
        enc, infos = encode_features(parts[split], schema, fitted)
        if schema.group_key:
            enc = _group_ids(enc)
        split_dir = out_dir / split
        split_dir.mkdir()
        tmp = work / f"{split}.parquet"
        enc.sink_parquet(tmp, row_group_size=ROW_GROUP_SIZE)
        files = _reshard(tmp, split_dir, rows_per_shard)
        scan = pl.scan_parquet([split_dir / f for f in files])
        stats = scan.select(
            [pl.len().alias("rows")]
            + [pl.col(lab.name).mean().alias(lab.name) for lab in schema.labels]
            + [(pl.col(i.name) == OOV_ID).mean().alias(i.name) for i in infos if i.kind == "sparse"]
        ).collect().row(0, named=True)
        if stats["rows"] == 0:
            raise BadInputError(f"split {split!r} is empty after preparation")
        splits[split] = SplitInfo(files=[f"{split}/{f}" for f in files], rows=int(stats["rows"]),
                                  label_means=[float(stats[lab.name]) for lab in schema.labels])
        oov[split] = {i.name: round(float(stats[i.name]), 6) for i in infos if i.kind == "sparse"}
        log(f"{split}: {stats['rows']:,} rows, label means {splits[split].label_means}")

    fm = FeatureMap(
        dataset=preset.name if preset else schema.name,
        schema_hash=schema.fingerprint(),
        labels=[lab.name for lab in schema.labels],
        features=infos,
        feature_groups=dict(schema.feature_groups),
        has_group=schema.group_key is not None,
        has_time=schema.time_column is not None,
        splits=splits,
        report={"bad_rows": report.to_dict(), "oov_rate": oov, "seconds": round(time.time() - t0, 2)},
        extras={"prepare_key": key, **(preset.extras(Path(raw_path)) if preset and raw_path else {})},
        root=out_dir,
    )
    shutil.rmtree(work)
    dump_schema(schema, out_dir / "schema.yaml")
    fm.save(out_dir / "feature_map.json")
    return fm


def _reshard(src: Path, dest: Path, rows_per_shard: int) -> list[str]:
    """Split one Parquet file into shards of at most ``rows_per_shard`` rows, keeping its row
    groups (streamed: one row group in memory at a time)."""
    pf = pq.ParquetFile(src)
    files, writer, rows = [], None, 0
    for i in range(pf.num_row_groups):
        table = pf.read_row_group(i)
        if writer is None or rows >= rows_per_shard:
            if writer is not None:
                writer.close()
            name = f"part-{len(files):05d}.parquet"
            writer = pq.ParquetWriter(dest / name, table.schema)
            files.append(name)
            rows = 0
        writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
        rows += table.num_rows
    if writer is None:  # empty split: still write an empty file with the schema
        name = "part-00000.parquet"
        pq.write_table(pf.schema_arrow.empty_table(), dest / name)
        files.append(name)
    else:
        writer.close()
    return files
