"""One Parquet output file of a distillation job, tagged as ours in its metadata, so that an
existing file is replaced only when it is the same job's output and ``overwrite`` is given, and
never when it is one of the job's inputs (core/files.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import polars as pl

from rankmixer.core.files import OutputError, atomic_file, check_output, parquet_key_values

META_KEY = "rankmixer"


def check_parquet_output(path: Path, kind: str, inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse ``path`` if it is an input, a directory, a file we did not write as ``kind``, or
    (without ``overwrite``) an earlier output of ours."""
    if path.suffix != ".parquet":
        raise OutputError(f"{path}: the {kind} output is a Parquet file; give a path ending in .parquet")
    check_output(path, list(inputs), f"{kind} output")
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_file():
        raise OutputError(f"{path} exists and is not a file; refusing to replace it")
    if parquet_key_values(path).get(META_KEY.encode()) != kind.encode():
        raise OutputError(f"{path} exists and was not written by rankmixer as a {kind!r}; refusing to replace it")
    if not overwrite:
        raise OutputError(f"{path} already holds a {kind}; pass --overwrite to replace it")


def write_parquet(frame: pl.DataFrame, path: Path, kind: str) -> None:
    """``frame`` to ``path`` atomically, tagged as a ``kind`` output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        frame.write_parquet(tmp, metadata={META_KEY: kind})
