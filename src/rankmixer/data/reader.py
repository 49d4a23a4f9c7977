"""Read raw CSV/TSV/Parquet files, checking every value against the schema's source types.

Reading is streamed block by block (pyarrow's incremental CSV reader / Parquet row groups), so
memory stays bounded however large the input. Each block is checked and written to a typed
Parquet file; nothing downstream ever sees an unchecked value.

Bad rows (wrong field count, a value that does not parse as the declared type, NaN/inf in a
numeric column, an empty required field) either stop the run with an error naming the file,
line and column (``on_bad_row="fail"``, the default) or are skipped and counted
(``on_bad_row="skip"``). Empty fields in optional columns are missing values (null).

Two bookkeeping columns are added: ``__file`` (index of the raw file in the list given) and
``__row`` (the 1-based line number in a CSV file, header included; the 1-based row number in a
Parquet file), so later checks can still point at the source line.
"""

from __future__ import annotations

import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from rankmixer.data.schema import RawColumn, SourceSpec

OnBadRow = Literal["fail", "skip"]
# Columns the reader adds to every row: which file and which line it came from (for messages).
FILE_COL = "__file"
ROW_COL = "__row"
_MAX_EXAMPLES = 5
_POLARS_TYPE = {"int": pl.Int64, "float": pl.Float64, "str": pl.Utf8}


class BadInputError(ValueError):
    """Raised for malformed input; the message names the file, line and column."""


@dataclass
class BadRowReport:
    """Counts of skipped rows by reason, with a few examples for the user to look at."""

    rows_read: int = 0
    rows_skipped: int = 0
    by_reason: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    # Side tables (MovieLens' movies.csv): file name -> {"rows_read", "rows_skipped"}. Their
    # skipped rows are in rows_skipped too (reasons prefixed with the file name); their rows
    # read are kept apart, since rows_read counts the rows of the main files.
    side_tables: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, reason: str, count: int, example: str, side_table: str | None = None) -> None:
        """Count ``count`` skipped rows; ``side_table`` names the side table they came from."""
        self.rows_skipped += count
        self.by_reason[reason] += count
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(example)
        if side_table is not None:
            self.side_tables.setdefault(side_table, {"rows_read": 0, "rows_skipped": 0})["rows_skipped"] += count

    def merge(self, other: "BadRowReport") -> None:
        self.rows_read += other.rows_read
        self.rows_skipped += other.rows_skipped
        self.by_reason.update(other.by_reason)
        self.examples.extend(other.examples[: max(0, _MAX_EXAMPLES - len(self.examples))])
        for name, counts in other.side_tables.items():
            mine = self.side_tables.setdefault(name, {"rows_read": 0, "rows_skipped": 0})
            for k in mine:
                mine[k] += counts[k]

    def add_side_table(self, name: str, other: "BadRowReport") -> None:
        """Count a side table's report (see ``side_tables``)."""
        self.rows_skipped += other.rows_skipped
        for reason, n in other.by_reason.items():
            self.by_reason[f"{name}: {reason}"] += n
        self.examples.extend(other.examples[: max(0, _MAX_EXAMPLES - len(self.examples))])
        mine = self.side_tables.setdefault(name, {"rows_read": 0, "rows_skipped": 0})
        mine["rows_read"] += other.rows_read
        mine["rows_skipped"] += other.rows_skipped

    def to_dict(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "rows_skipped": self.rows_skipped,
            "by_reason": dict(sorted(self.by_reason.items())),
            "examples": self.examples,
            "side_tables": self.side_tables,
        }


def _check_block(
    df: pl.DataFrame,
    columns: list[RawColumn],
    path: Path,
    on_bad_row: OnBadRow,
    report: BadRowReport,
    where: str,
) -> pl.DataFrame:
    """Cast a block to the declared types; fail on or drop rows whose values don't fit.

    ``df`` holds the raw columns (strings for CSV, anything for Parquet) plus ``__row``.
    ``where`` is "line" for CSV and "row" for Parquet, for the messages.
    """
    casts, bad_masks = [], []
    for col in columns:
        s = df.get_column(col.name)
        target = _POLARS_TYPE[col.type]
        if s.dtype == pl.Utf8:
            s = s.str.strip_chars()
            raw = s
            s = s.replace("", None)
            missing = s.is_null()
            if col.type != "str":
                s = s.cast(target, strict=False)
        else:
            raw = s.cast(pl.Utf8, strict=False)
            missing = s.is_null()
            try:
                s = s.cast(target, strict=False)
            except pl.exceptions.InvalidOperationError:
                s = pl.Series(s.name, [None] * len(s), dtype=target)
        problems = []
        unparsable = s.is_null() & ~missing
        problems.append((unparsable, f"expected {col.type}"))
        if col.type == "float":
            problems.append((s.is_not_null() & ~s.is_finite(), "non-finite value (NaN/inf)"))
        if col.required:
            problems.append((missing, "missing value in required column"))
        for mask, what in problems:
            if mask.any():
                idx = int(mask.arg_true()[0])
                line = int(df.get_column(ROW_COL)[idx])
                shown = raw[idx] if raw[idx] is not None else ""
                msg = f"{path}: {where} {line}, column {col.name!r}: {what}, got {shown!r}"
                if on_bad_row == "fail":
                    raise BadInputError(msg + " (use --on-bad-row skip to skip such rows)")
                report.add(f"column {col.name}: {what}", int(mask.sum()), msg)
                bad_masks.append(mask)
        casts.append(s.alias(col.name))
    out = df.select(ROW_COL).with_columns(casts)
    if bad_masks:
        bad = bad_masks[0]
        for m in bad_masks[1:]:
            bad = bad | m
        # Count rows once even when several of their columns were bad.
        overlap = sum(int(m.sum()) for m in bad_masks) - int(bad.sum())
        report.rows_skipped -= overlap
        out = out.filter(~bad)
    return out


@contextmanager
def _quiet_undecodable_rows():
    """pyarrow decodes an invalid row's bytes as UTF-8 before it calls the invalid-row handler;
    for bytes that are not UTF-8 that decode fails inside pyarrow, which Python reports as an
    "Exception ignored" traceback on stderr. The read still fails (a BadInputError naming the
    file and row): this keeps the user's screen to that one message."""
    previous = sys.unraisablehook

    def hook(unraisable) -> None:
        if not isinstance(unraisable.exc_value, UnicodeDecodeError):
            previous(unraisable)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _csv_blocks(path: Path, source: SourceSpec, on_bad_row: OnBadRow, report: BadRowReport):
    """Yield (polars block with ``__row`` = line number) from a CSV/TSV file."""
    names = [c.name for c in source.columns]
    if path.stat().st_size == 0:
        raise BadInputError(f"{path}: empty file (no header and no rows)")
    skipped_lines: list[int] = []
    first_error: list[str] = []

    def on_invalid(row) -> str:
        try:
            text = repr(row.text[:120])
        except UnicodeDecodeError:  # pyarrow decodes the row's bytes as UTF-8 to show them
            text = "(not UTF-8 text)"
        msg = (
            f"{path}: line {row.number}: expected {row.expected_columns} fields, "
            f"got {row.actual_columns}: {text}"
        )
        if on_bad_row == "fail":
            first_error.append(msg)
            return "error"
        report.rows_read += 1  # parsed rows are counted per block; this one never reaches a block
        report.add("wrong number of fields", 1, msg)
        skipped_lines.append(row.number)
        return "skip"

    read_opts = pacsv.ReadOptions(
        use_threads=False,  # sequential reading keeps line numbers exact
        column_names=None if source.has_header else names,
        block_size=8 << 20,
    )
    parse_opts = pacsv.ParseOptions(delimiter=source.sep, invalid_row_handler=on_invalid)
    if source.has_header:
        try:
            with _quiet_undecodable_rows():
                header = pacsv.open_csv(
                    path, read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 16),
                    parse_options=pacsv.ParseOptions(delimiter=source.sep, invalid_row_handler=lambda r: "skip"),
                ).schema.names
        except (pa.ArrowInvalid, UnicodeDecodeError) as e:
            raise BadInputError(f"{path}: cannot read as {source.format}: {e}") from None
        missing = [n for n in names if n not in header]
        if missing:
            raise BadInputError(f"{path}: missing column(s) {missing} (header has {header})")
    convert = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names},
        include_columns=names,
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    try:
        with _quiet_undecodable_rows():
            reader = pacsv.open_csv(path, read_options=read_opts, parse_options=parse_opts, convert_options=convert)
    except pa.ArrowInvalid as e:
        if first_error:
            raise BadInputError(first_error[0] + " (use --on-bad-row skip to skip such rows)") from None
        raise BadInputError(f"{path}: cannot read as {source.format}: {e}") from None

    base = 2 if source.has_header else 1  # line number of the first data row
    emitted = 0
    while True:
        try:
            with _quiet_undecodable_rows():
                batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as e:
            if first_error:
                raise BadInputError(first_error[0] + " (use --on-bad-row skip to skip such rows)") from None
            raise BadInputError(f"{path}: cannot parse: {e}") from None
        n = batch.num_rows
        if n == 0:
            continue
        # Line of the i-th kept row = base + i + (skipped lines before it). With skipped lines
        # s_0 < s_1 < ..., row i follows skip j iff s_j - j <= base + i.
        idx = np.arange(emitted, emitted + n, dtype=np.int64)
        if skipped_lines:
            s = np.asarray(skipped_lines, dtype=np.int64)
            adj = s - np.arange(len(s)) - base
            idx = idx + np.searchsorted(adj, idx, side="right")
        emitted += n
        df = pl.from_arrow(batch)
        assert isinstance(df, pl.DataFrame)
        yield df.with_columns(pl.Series(ROW_COL, idx + base, dtype=pl.Int64))


def _parquet_blocks(path: Path, source: SourceSpec):
    names = [c.name for c in source.columns]
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a broken file
        raise BadInputError(f"{path}: not a readable Parquet file: {e}") from None
    present = pf.schema_arrow.names
    missing = [n for n in names if n not in present]
    if missing:
        raise BadInputError(f"{path}: missing column(s) {missing} (file has {present})")
    start = 1
    for batch in pf.iter_batches(batch_size=262_144, columns=names):
        df = pl.from_arrow(batch)
        assert isinstance(df, pl.DataFrame)
        n = df.height
        yield df.with_columns(pl.Series(ROW_COL, np.arange(start, start + n), dtype=pl.Int64))
        start += n


def _checked_blocks(path: Path, source: SourceSpec, on_bad_row: OnBadRow, report: BadRowReport):
    """Yield type-checked polars blocks of one raw file (``__row`` included)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"raw file not found: {path}")
    if source.format == "parquet":
        blocks, where = _parquet_blocks(path, source), "row"
    else:
        blocks, where = _csv_blocks(path, source, on_bad_row, report), "line"
    any_rows = False
    for block in blocks:
        any_rows = True
        report.rows_read += block.height
        yield _check_block(block, source.columns, path, on_bad_row, report, where)
    if not any_rows:
        raise BadInputError(f"{path}: no data rows")


def read_raw(
    paths: list[Path],
    source: SourceSpec,
    out_dir: Path,
    on_bad_row: OnBadRow = "fail",
    file_offset: int = 0,
) -> tuple[list[Path], BadRowReport]:
    """Check and convert raw files into typed Parquet files in ``out_dir`` (one per input).

    ``file_offset`` is added to ``__file`` so several calls can share one numbering.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    report = BadRowReport()
    outputs = []
    for i, path in enumerate(paths):
        target = out_dir / f"typed-{file_offset + i:05d}.parquet"
        writer = None
        for typed in _checked_blocks(path, source, on_bad_row, report):
            table = typed.with_columns(pl.lit(file_offset + i, dtype=pl.Int32).alias(FILE_COL)).to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(target, table.schema)
            writer.write_table(table)
        assert writer is not None  # _checked_blocks raised on a file without rows
        writer.close()
        outputs.append(target)
    return outputs, report


def read_table(path: Path, source: SourceSpec, on_bad_row: OnBadRow = "fail",
               report: BadRowReport | None = None) -> pl.DataFrame:
    """Read a small side table (e.g. MovieLens movies.csv) fully into memory, checked. The
    frame keeps ``__row`` (line numbers, for messages about its rows); its skipped rows are
    counted in ``report`` under the file's name (see :meth:`BadRowReport.add_side_table`)."""
    own = BadRowReport()
    frames = list(_checked_blocks(path, source, on_bad_row, own))
    if report is not None:
        report.add_side_table(Path(path).name, own)
    return pl.concat(frames)
