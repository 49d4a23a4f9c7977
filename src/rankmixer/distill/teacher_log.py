"""The inference job of external distillation: the teacher's predictions for logged rows, each
made by the teacher as it was served when the row was logged.

A teacher trained by ``train.streaming`` with ``keep_day_weights`` leaves one snapshot per day
(``day_weights/day-<d>.safetensors``: the model trained up to day d). A row of day d (the
teacher's own day rule on its time column) was served by the snapshot of day ``d - 1 -
staleness``: the teacher trained up to the day before, or ``staleness`` days older when its
updates lag (ExFM's stale foundation model). Rows for which no such snapshot exists (the first
days) get no prediction and are counted. Scoring goes through ``rankmixer predict``'s path: raw
rows encoded with the teacher's vocabularies.

Output: one Parquet file, one row per scored input row: ``<key>``, ``day``, ``teacher_day`` and
``<task>_prob`` per teacher task.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Sequence

import polars as pl

from rankmixer.core.files import unique_suffix
from rankmixer.core.rundir import DAY_WEIGHTS_DIR
from rankmixer.data.reader import BadInputError
from rankmixer.data.schema import load_schema
from rankmixer.distill.parquet_out import check_parquet_output, write_parquet
from rankmixer.experiment import predict
from rankmixer.runs import load_run

KIND = "teacher log"


def day_snapshots(run_dir: Path) -> dict[int, Path]:
    """The day snapshots of a streamed run: day -> weights file."""
    folder = Path(run_dir) / DAY_WEIGHTS_DIR
    out = {}
    for p in sorted(folder.glob("day-*.safetensors")):
        try:
            out[int(p.name[len("day-"):-len(".safetensors")])] = p
        except ValueError:
            continue
    return out


def log_teacher(run_dir: str | Path, rows: Sequence[str | Path], out: str | Path, *, staleness: int = 0,
                key: str = "request_id", overwrite: bool = False, log: Callable[[str], None] = print) -> dict:
    """Score ``rows`` (raw Parquet files in the teacher's source format, with a ``key`` column)
    by the teacher's snapshot of ``day - 1 - staleness``; write them to ``out``; return counts."""
    run_dir, out, rows = Path(run_dir), Path(out), [Path(p) for p in rows]
    if staleness < 0:
        raise ValueError(f"--staleness must be 0 or more days, got {staleness}")
    check_parquet_output(out, KIND, [*rows, run_dir], overwrite)
    run = load_run(run_dir)
    schema = load_schema(run.feature_map.root / "schema.yaml")
    if schema.days is None:
        raise ValueError(f"teacher run {run_dir} was not trained on data prepared by day (schema days); "
                         "its day snapshots cannot be matched to rows")
    snapshots = day_snapshots(run_dir)
    if not snapshots:
        raise ValueError(f"teacher run {run_dir} has no day snapshots in {DAY_WEIGHTS_DIR}/: train it with "
                         "train.streaming.keep_day_weights=true")
    frame = pl.scan_parquet(rows)
    names = frame.collect_schema().names()
    for col in (key, schema.time_column):
        if col not in names:
            raise BadInputError(f"{rows[0]}: no column {col!r} (the rows need the request key and the time column)")
    day = ((pl.col(schema.time_column).cast(pl.Int64) + schema.days.offset) // schema.days.seconds).alias("day")
    frame = frame.with_columns(day)
    days = sorted(frame.select(pl.col("day").unique()).collect()["day"].to_list())
    tasks = run.feature_map.labels
    work = out.parent / f".tmp-{out.name}-{unique_suffix()}.work"
    work.mkdir(parents=True)
    parts, by_day = [], {}
    try:
        for d in days:
            snap = d - 1 - staleness
            day_rows = frame.filter(pl.col("day") == d)
            n = day_rows.select(pl.len()).collect().item()
            if snap not in snapshots:
                by_day[d] = {"rows": n, "logged": 0, "teacher_day": None}
                log(f"day {d}: {n:,} rows, no snapshot of day {snap}: not scored")
                continue
            src, dst = work / f"day-{d}.parquet", work / f"scores-{d}.parquet"
            day_rows.drop("day").sink_parquet(src)
            predict(run_dir, src, dst, input_format="raw", weights=snapshots[snap])
            scores = pl.read_parquet(dst).select([f"{t}_prob" for t in tasks])
            keys = pl.read_parquet(src, columns=[key])
            parts.append(keys.hstack(scores).with_columns(
                pl.lit(d).alias("day"), pl.lit(snap).alias("teacher_day")))
            by_day[d] = {"rows": n, "logged": n, "teacher_day": snap}
            log(f"day {d}: {n:,} rows scored by the snapshot of day {snap}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logged = pl.concat(parts) if parts else pl.DataFrame(
        {key: [], "day": [], "teacher_day": [], **{f"{t}_prob": [] for t in tasks}})
    dup = logged.filter(pl.col(key).is_duplicated()).head(1)
    if dup.height:
        raise BadInputError(f"request key {key}={dup[key][0]} appears more than once in {rows[0]} ..; "
                            "a teacher log needs one row per request")
    write_parquet(logged, out, KIND)
    total = sum(v["rows"] for v in by_day.values())
    return {"rows": total, "logged": logged.height, "not_scored": total - logged.height, "staleness": staleness,
            "days": by_day, "tasks": tasks, "output": str(out)}
