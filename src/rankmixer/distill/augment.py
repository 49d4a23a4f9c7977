"""The data-augmentation job of external distillation: a teacher's logged predictions (the
output of :mod:`.teacher_log`) joined to a student's rows by request id.

A left join in Polars: every row is kept, in its order; a row whose request has no logged
prediction keeps an empty teacher column (counted here; the student then learns that row from
its true label alone). A request logged twice is an error, since the join would duplicate rows.
The output is one Parquet file: the rows' columns plus ``teacher_<task>`` per task, ready to be
declared in a schema's ``teacher_columns`` (docs/production.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import polars as pl

from rankmixer.data.reader import BadInputError
from rankmixer.distill.parquet_out import check_parquet_output, write_parquet

KIND = "augmented rows"


def teacher_columns(tasks: Sequence[str]) -> dict[str, str]:
    """label -> the column the join adds for it (a schema's ``teacher_columns``)."""
    return {t: f"teacher_{t}" for t in tasks}


def augment(rows: Sequence[str | Path], teacher_log: str | Path, out: str | Path, *, key: str = "request_id",
            overwrite: bool = False) -> dict:
    """Join ``teacher_log``'s ``<task>_prob`` columns to ``rows`` (Parquet files with ``key``)
    as ``teacher_<task>``; write ``out``; return the counts."""
    rows, teacher_log, out = [Path(p) for p in rows], Path(teacher_log), Path(out)
    check_parquet_output(out, KIND, [*rows, teacher_log], overwrite)
    logged = pl.read_parquet(teacher_log)
    probs = [c for c in logged.columns if c.endswith("_prob")]
    if key not in logged.columns or not probs:
        raise BadInputError(f"{teacher_log}: not a teacher log (needs {key!r} and <task>_prob columns; has "
                            f"{logged.columns})")
    dup = logged.filter(pl.col(key).is_duplicated()).head(1)
    if dup.height:
        raise BadInputError(f"{teacher_log}: request {key}={dup[key][0]} is logged more than once")
    bad = logged.filter(pl.any_horizontal([~pl.col(c).is_between(0.0, 1.0) | pl.col(c).is_nan() for c in probs])).head(1)
    if bad.height:
        raise BadInputError(f"{teacher_log}: request {key}={bad[key][0]} has a prediction outside [0, 1]: "
                            f"{bad.select(probs).row(0, named=True)}")
    tasks = [c[: -len("_prob")] for c in probs]
    names = teacher_columns(tasks)
    frame = pl.scan_parquet(rows)
    have = frame.collect_schema().names()
    if key not in have:
        raise BadInputError(f"{rows[0]}: no column {key!r} to join the teacher's predictions on")
    clash = [c for c in names.values() if c in have]
    if clash:
        raise BadInputError(f"{rows[0]}: already has column(s) {clash}; augment the rows without them")
    table = logged.select([pl.col(key).cast(frame.collect_schema()[key]),
                           *(pl.col(f"{t}_prob").alias(names[t]) for t in tasks)])
    joined = frame.join(table.lazy(), on=key, how="left", maintain_order="left").collect()
    missing = joined.select(pl.col(names[tasks[0]]).is_null().sum()).item()
    write_parquet(joined, out, KIND)
    return {"rows": joined.height, "with_teacher": joined.height - missing, "without_teacher": missing,
            "teacher_columns": names, "output": str(out)}
