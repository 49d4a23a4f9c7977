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
    train/day-<d>/part-00000.parquet   instead, with schema ``days``: the training rows by day
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from rankmixer.core.files import OutputError, atomic_directory, check_output, output_lock, write_text_atomic
from rankmixer.data.behaviour import check_behaviours
from rankmixer.data.datasets.base import DatasetPreset, RawFiles, TransformContext
from rankmixer.data.encode import encode_features, fit_statistics, fnv1a64, load_fitted, split_lists
from rankmixer.data.feature_map import (
    GROUP_COLUMN,
    TIME_COLUMN,
    DayInfo,
    FeatureInfo,
    FeatureMap,
    SplitInfo,
    teacher_column,
)
from rankmixer.data.reader import FILE_COL, ROW_COL, BadInputError, BadRowReport, OnBadRow, read_raw, read_table
from rankmixer.data.schema import OOV_ID, DaySpec, Schema, dump_schema

SPLITS = ("train", "valid", "test")
SPLIT_COL = "__split"
# Small row groups let the loader shuffle at a fine grain (it shuffles row groups, then rows).
ROW_GROUP_SIZE = 16_384
# Bumped whenever the encoding itself changes, so old caches are not reused.
FORMAT_VERSION = 1
PREPARED_KIND = "prepared data"  # the ownership marker's kind (core/files.py)


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


def _check_teacher(lf: pl.LazyFrame, schema: Schema, on_bad_row: OnBadRow, raw_names: list[str],
                   report: BadRowReport) -> pl.LazyFrame:
    """A teacher prediction (schema ``teacher_columns``) is empty or a probability in [0, 1]:
    anything else fails naming the row, or (skip) drops the row and counts it."""
    if not schema.teacher_columns:
        return lf
    cols = list(schema.teacher_columns.values())
    bad = pl.lit(False)
    for c in cols:
        v = pl.col(c).cast(pl.Float64, strict=False)
        bad = bad | (pl.col(c).is_not_null() & (v.is_null() | v.is_nan() | (v < 0) | (v > 1)))
    offenders = lf.filter(bad).select([FILE_COL, ROW_COL] + cols)
    first = offenders.head(1).collect()
    if not first.height:
        return lf
    r = first.row(0, named=True)
    where = f"{raw_names[r[FILE_COL]]}: line/row {r[ROW_COL]}"
    if on_bad_row == "fail":
        raise BadInputError(f"{where}: teacher predictions {({c: r[c] for c in cols})} are not probabilities "
                            "in [0, 1] (use --on-bad-row skip to skip such rows)")
    report.add("teacher prediction not in [0,1]", offenders.select(pl.len()).collect().item(), f"{where}: {r}")
    return lf.filter(~bad)


def canonical_rows(schema: Schema, raw: RawFiles, work: Path, preset: DatasetPreset | None, raw_path: Path | None,
                   on_bad_row: OnBadRow) -> tuple[pl.LazyFrame, BadRowReport, list[str]]:
    """Read and type-check the raw files, apply the preset's transform, check the canonical
    columns, labels and behaviour sequences. Per-split raw files get a ``__split`` column."""
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
    lf = _check_teacher(lf, schema, on_bad_row, raw_names, report)
    lf = check_behaviours(split_lists(lf, schema), schema, on_bad_row, raw_names, report)
    return lf, report, raw_names


def split_canonical(lf: pl.LazyFrame, schema: Schema, work: Path, *, by_files: bool,
                    log=print) -> dict[str, pl.LazyFrame]:
    """The canonical rows (from :func:`canonical_rows`) of each split, in the order preparation
    encodes them. The canonical frame is materialised once in ``work`` so the splits, fitting and
    encoding do not rerun the transform (and its joins/windows) several times. ``by_files``: the
    raw files came one list per split (their ``__split`` column decides)."""
    canon = work / "canonical.parquet"
    lf.sink_parquet(canon, row_group_size=ROW_GROUP_SIZE)
    lf = pl.scan_parquet(canon)
    if by_files:
        return {s: lf.filter(pl.col(SPLIT_COL) == s) for s in SPLITS}
    if schema.split.method == "time":
        t = pl.col(schema.time_column)
        r_train, r_valid, _ = schema.split.ratios
        q = lf.select(t.quantile(r_train, "lower").alias("a"), t.quantile(r_train + r_valid, "lower").alias("b"))
        a, b = q.collect(engine="streaming").row(0)
        log(f"time split at {a} / {b}")
        return {"train": lf.filter(t < a), "valid": lf.filter((t >= a) & (t < b)), "test": lf.filter(t >= b)}
    r_train, r_valid, _ = schema.split.ratios
    u = _split_bucket(schema.split.seed)
    ca, cb = int(round(r_train * 10_000)), int(round((r_train + r_valid) * 10_000))
    return {"train": lf.filter(u < ca), "valid": lf.filter((u >= ca) & (u < cb)), "test": lf.filter(u >= cb)}


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
    Processes preparing the same ``out_dir`` at once take turns (:func:`output_lock`, not taken
    when the data is reused, so a read-only cache still serves): the later ones reuse what the
    first prepared.
    """
    out_dir = Path(out_dir)
    side = preset.side_files(Path(raw_path)) if preset is not None and raw_path is not None else []
    check_output(out_dir, [*raw.all, *(p for v in raw.by_split.values() for p in v), *side, raw_path, *inputs],
                 "prepared data directory")
    key = _fingerprint(schema, raw, {"on_bad_row": on_bad_row, "preset": preset.name if preset else None}, side)
    name = preset.name if preset else schema.name
    fm = _reusable(out_dir, key, preset, raw_path, log) if not force else None
    if fm is not None:
        return fm
    with output_lock(out_dir):  # parallel first uses (searches on a fresh cache) prepare once
        fm = _reusable(out_dir, key, preset, raw_path, log) if not force else None
        if fm is not None:  # another process prepared it while this one waited
            return fm
        existing = _existing_map(out_dir)
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


def _reusable(out_dir: Path, key: str, preset: DatasetPreset | None, raw_path: Path | None, log) -> FeatureMap | None:
    """The prepared data in ``out_dir`` when it was prepared from the same inputs (its extras
    refreshed when the preset now carries more), else None."""
    existing = _existing_map(out_dir)
    if existing is None or existing.extras.get("prepare_key") != key:
        return None
    log(f"reusing prepared data in {out_dir} (same schema and raw files)")
    extras = _extras(key, preset, raw_path)
    if json.loads(json.dumps(extras)) != existing.extras:  # the preset now carries more
        existing.extras = extras
        write_text_atomic(out_dir / "feature_map.json", json.dumps(existing.to_dict(), indent=2))
        log(f"refreshed the dataset's extras in {out_dir / 'feature_map.json'}")
    return existing


def _extras(key: str, preset: DatasetPreset | None, raw_path: Path | None) -> dict:
    """The feature map's ``extras``: the preparation key and what the preset carries along."""
    return {"prepare_key": key, **(preset.extras(Path(raw_path)) if preset and raw_path else {})}


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

    # 3. Split.
    parts = split_canonical(lf, schema, work, by_files=not raw.all, log=log)

    # 4. Fit on train, encode every split, write shards.
    fitted = fit_statistics(parts["train"], schema)
    vocab_dir = out_dir / "vocab"
    vocab_dir.mkdir()
    for table, vocab in fitted.vocabs.items():
        vocab.write_parquet(vocab_dir / f"{table}.parquet")
    splits: dict[str, SplitInfo] = {}
    infos: list[FeatureInfo] = []
    oov: dict[str, dict[str, float]] = {}
    teacher_missing: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        enc, infos = encode_features(parts[split], schema, fitted)
        if schema.group_key:
            enc = _group_ids(enc)
        split_dir = out_dir / split
        split_dir.mkdir()
        if split == "train" and schema.days is not None:
            days = _write_days(enc, schema.days, split_dir, work, rows_per_shard, [lab.name for lab in schema.labels])
            files = [f for d in days for f in d.files]
            log(f"train: {len(days)} days ({days[0].day} .. {days[-1].day}), "
                f"{min(d.rows for d in days):,} .. {max(d.rows for d in days):,} rows a day")
        else:
            tmp = work / f"{split}.parquet"
            enc.sink_parquet(tmp, row_group_size=ROW_GROUP_SIZE)
            files = _reshard(tmp, split_dir, rows_per_shard)
        scan = pl.scan_parquet([split_dir / f for f in files])
        # OOV rates: of sparse ids per row, of behaviour field ids per position.
        oov_cols = [i.name for i in infos if i.kind == "sparse"]
        beh_cols = [c for i in infos if i.kind == "behaviour" for c in i.columns[:-1]]
        teacher_cols = [teacher_column(t) for t in schema.teacher_columns]
        stats = scan.select(
            [pl.len().alias("rows")]
            + [pl.col(c).is_nan().sum().alias(c) for c in teacher_cols]
            + [pl.col(lab.name).mean().alias(lab.name) for lab in schema.labels]
            + [(pl.col(c) == OOV_ID).mean().alias(c) for c in oov_cols]
            + [((pl.col(c).list.eval(pl.element() == OOV_ID).list.sum().sum())
                / pl.col(c).list.len().sum().clip(lower_bound=1)).alias(c) for c in beh_cols]
        ).collect().row(0, named=True)
        if stats["rows"] == 0:
            raise BadInputError(f"split {split!r} is empty after preparation")
        if split == "train" and schema.days is not None:
            for d in days:
                d.files = [f"{split}/{f}" for f in d.files]
        splits[split] = SplitInfo(files=[f"{split}/{f}" for f in files], rows=int(stats["rows"]),
                                  label_means=[float(stats[lab.name]) for lab in schema.labels])
        oov[split] = {c: round(float(stats[c]), 6) for c in oov_cols + beh_cols}
        if teacher_cols:  # rows without a teacher prediction: the hard label stands in for it
            teacher_missing[split] = {t: int(stats[teacher_column(t)]) for t in schema.teacher_columns}
            log(f"{split}: rows without a teacher prediction {teacher_missing[split]}")
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
        days=days if schema.days is not None else [],
        teacher_labels=[lab.name for lab in schema.labels if lab.name in schema.teacher_columns],
        report={"bad_rows": report.to_dict(), "oov_rate": oov, "seconds": round(time.time() - t0, 2),
                **({"teacher_missing": teacher_missing} if teacher_missing else {})},
        extras=_extras(key, preset, raw_path),
        root=out_dir,
    )
    shutil.rmtree(work)
    dump_schema(schema, out_dir / "schema.yaml")
    fm.save(out_dir / "feature_map.json")
    return fm


def _write_days(enc: pl.LazyFrame, spec: DaySpec, split_dir: Path, work: Path, rows_per_shard: int,
                labels: list[str]) -> list[DayInfo]:
    """The training rows one folder per day (``day-<d>/part-*.parquet``, ``d`` =
    ``floor((time + offset) / seconds)``), each day sorted by time (rows of equal time keep
    their order). A row without a time has no day: an error naming how many."""
    day_col = "__day"
    tmp = work / "train-by-day.parquet"
    (enc.with_columns(((pl.col(TIME_COLUMN) + spec.offset) // spec.seconds).alias(day_col))
     .sort([day_col, TIME_COLUMN], maintain_order=True, nulls_last=True)
     .sink_parquet(tmp, row_group_size=ROW_GROUP_SIZE))
    scan = pl.scan_parquet(tmp)
    missing = scan.select(pl.col(TIME_COLUMN).null_count()).collect().item()
    if missing:
        raise BadInputError(f"train split: {missing:,} row(s) without a value in the time column; "
                            "day partitions (schema days) need a time on every row")
    per_day = (scan.group_by(day_col).agg([pl.len().alias("rows"), *(pl.col(t).mean() for t in labels)])
               .sort(day_col).collect())
    days = []
    for row in per_day.iter_rows(named=True):
        d = int(row[day_col])
        name = f"day-{d}"
        part = work / f"{name}.parquet"
        scan.filter(pl.col(day_col) == d).drop(day_col).sink_parquet(part, row_group_size=ROW_GROUP_SIZE)
        (split_dir / name).mkdir()
        files = _reshard(part, split_dir / name, rows_per_shard)
        part.unlink()
        days.append(DayInfo(day=d, files=[f"{name}/{f}" for f in files], rows=int(row["rows"]),
                            label_means=[float(row[t]) for t in labels]))
    if not days:
        raise BadInputError("split 'train' is empty after preparation")
    return days


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
