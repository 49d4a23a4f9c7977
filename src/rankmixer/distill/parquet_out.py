"""One Parquet output file of a distillation job, tagged as ours in its metadata, so that an
existing file is replaced only when it is the same job's output and ``overwrite`` is given, and
never when it is one of the job's inputs (core/files.py, :func:`check_table_output`)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import polars as pl

from rankmixer.core.files import TABLE_KEY, OutputError, atomic_file, check_table_output


def check_parquet_output(path: Path, kind: str, inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse ``path`` unless it ends in .parquet and :func:`check_table_output` allows it."""
    if path.suffix != ".parquet":
        raise OutputError(f"{path}: the {kind} output is a Parquet file; give a path ending in .parquet")
    check_table_output(path, kind, inputs, overwrite)


def write_parquet(frame: pl.DataFrame, path: Path, kind: str) -> None:
    """``frame`` to ``path`` atomically, tagged as a ``kind`` output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        frame.write_parquet(tmp, metadata={TABLE_KEY: kind})
