"""``rankmixer distill``: the jobs of external distillation (ExFM): log a streamed teacher's
predictions as served, and join them to a student's rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from rankmixer.cli.common import console, user_errors

__all__ = ["augment", "distill_app", "log_teacher"]

distill_app = typer.Typer(no_args_is_help=True, help="External distillation (ExFM): the teacher's inference job "
                          "and the data-augmentation job.")


@distill_app.command("log-teacher")
def log_teacher(
    run: Path = typer.Option(..., "--run", help="The teacher's run directory (trained with train.streaming and "
                             "keep_day_weights)."),
    rows: List[Path] = typer.Option(..., "--rows", help="Raw Parquet rows to score (the teacher's source format, "
                                    "with the request key and the time column); repeat for several files."),
    out: Path = typer.Option(..., "--out", help="The teacher log (.parquet)."),
    staleness: int = typer.Option(0, min=0, help="Days the teacher lags: a row of day d is scored by the snapshot "
                                  "of day d - 1 - staleness."),
    key: str = typer.Option("request_id", help="The request key column."),
    overwrite: bool = typer.Option(False, help="Replace an earlier teacher log at --out."),
) -> None:
    """Score rows by the teacher snapshot that served them (the inference job)."""
    from rankmixer.distill.teacher_log import log_teacher as run_job

    with user_errors():
        report = run_job(run, rows, out, staleness=staleness, key=key, overwrite=overwrite, log=console.print)
    print(json.dumps({k: v for k, v in report.items() if k != "days"}))


@distill_app.command("augment")
def augment(
    rows: List[Path] = typer.Option(..., "--rows", help="The student's raw Parquet rows (with the request key)."),
    teacher_log: Path = typer.Option(..., "--teacher-log", help="A log written by `rankmixer distill log-teacher`."),
    out: Path = typer.Option(..., "--out", help="The augmented rows (.parquet)."),
    key: str = typer.Option("request_id", help="The request key column."),
    overwrite: bool = typer.Option(False, help="Replace earlier augmented rows at --out."),
) -> None:
    """Join the teacher's logged predictions to rows by request id (the data-augmentation job)."""
    from rankmixer.distill.augment import augment as run_job

    with user_errors():
        report = run_job(rows, teacher_log, out, key=key, overwrite=overwrite)
    print(json.dumps(report))
