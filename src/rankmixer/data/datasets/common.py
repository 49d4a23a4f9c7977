"""Transforms and file-layout helpers shared by the dataset presets."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from rankmixer.data.datasets.base import RawFiles
from rankmixer.data.reader import FILE_COL, ROW_COL, BadInputError, BadRowReport
from rankmixer.data.schema import BehaviourField, SessionSplit

_SPLIT_NAMES = {
    "train": ("train",),
    "valid": ("valid", "dev", "val", "validation"),
    "test": ("test",),
}


def bookkeeping(lf: pl.LazyFrame) -> list[str]:
    """The input's bookkeeping columns (names starting with "__": ``__file``, ``__row``, and
    e.g. the ``__split`` that preparation adds for pre-split raw files), to carry through."""
    names = lf.collect_schema().names()
    return [c for c in names if c.startswith("__")] or [FILE_COL, ROW_COL]


def user_history(
    lf: pl.LazyFrame,
    *,
    user: str,
    time: str,
    columns: dict[str, str],
    max_len: int,
    tiebreak: tuple[str, ...] = (),
) -> pl.LazyFrame:
    """Add, for every row, list columns with the same user's values from rows with a strictly
    smaller ``time`` (oldest first, the most recent ``max_len``): ``columns`` maps the output
    list column to the source column. Rows that share (user, time) get identical histories.

    Lazy and vectorised: the frame is sorted by (user, time, *tiebreak); for each row the start
    of its user's block and of its (user, time) block are found, and history slot k is a gather
    at ``block_start - k``. Returns the frame in that sorted order (callers re-sort if needed).
    Source values may be null; the lists keep them (so parallel histories stay aligned).
    """
    g, start, first = "__hist_g", "__hist_user_start", "__hist_time_start"
    lf = (
        lf.sort([user, time, *tiebreak])
        .with_row_index(g)
        .with_columns(pl.col(g).cast(pl.Int64))
        .with_columns(
            pl.col(g).min().over(user).alias(start),
            pl.col(g).min().over([user, time]).alias(first),
        )
    )
    n_prev = pl.min_horizontal(pl.col(first) - pl.col(start), pl.lit(max_len, pl.Int64))
    # Slot k (k = max_len .. 1, oldest first) is the row k places before the (user, time)
    # block. Slots before the user's first row hold another user's values (or row 0); only
    # the last n_prev slots are this user's, and list.tail keeps exactly those.
    idx = [(pl.col(first) - k).clip(lower_bound=0) for k in range(max_len, 0, -1)]
    dtypes = lf.collect_schema()
    lf = lf.with_columns(
        _stack([pl.col(src).gather(i) for i in idx])
        .list.tail(n_prev)
        .cast(pl.List(dtypes[src]))
        .alias(out)
        for out, src in columns.items()
    )
    return lf.drop(g, start, first)


def behaviour_history(
    lf: pl.LazyFrame,
    *,
    user: str,
    time: str,
    fields: dict[str, str],
    max_len: int,
    dt: str,
    tiebreak: tuple[str, ...] = (),
    separator: str = "|",
) -> pl.LazyFrame:
    """Add a behaviour sequence in the raw behaviour layout: for every row, one string column
    per per-position field (``fields`` maps the output column to the source column) holding the
    same user's values from rows with a strictly smaller ``time`` (as :func:`user_history`:
    oldest first, the most recent ``max_len``) joined by ``separator``, and ``dt``: the seconds
    (time units) from each of those rows to this one, so every gap is positive and the gaps do
    not increase from the oldest position to the newest. An empty history is ``""``; a null
    source value is an empty value at its position (missing, so the fields stay aligned).
    Returns the frame in :func:`user_history`'s sorted order."""
    tmp = {f"__bh_{out}": src for out, src in fields.items()}
    when = "__bh_time"
    lf = user_history(lf, user=user, time=time, columns={**tmp, when: time}, max_len=max_len,
                      tiebreak=tiebreak)

    def joined(e: pl.Expr) -> pl.Expr:
        return e.list.eval(pl.element().cast(pl.Utf8).fill_null("")).list.join(separator)

    return lf.with_columns(
        *(joined(pl.col(t)).alias(out) for out, t in zip(fields, tmp)),
        joined(pl.col(time) - pl.col(when)).alias(dt),
    ).drop(*tmp, when)


def _stack(exprs: list[pl.Expr]) -> pl.Expr:
    """Columns -> one list column. concat_arr (fixed width) is ~10x faster than concat_list
    on millions of rows; it is marked unstable in polars, so fall back when it is missing."""
    if hasattr(pl, "concat_arr"):
        return pl.concat_arr(exprs).arr.to_list()
    return pl.concat_list(exprs)


def find_split_files(path: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    """``{"train": ..., "valid": ..., "test": ...}`` for whichever of them exist in ``path``."""
    found: dict[str, Path] = {}
    for split, stems in _SPLIT_NAMES.items():
        for stem in stems:
            hits = [path / f"{stem}{e}" for e in exts if (path / f"{stem}{e}").is_file()]
            if hits:
                found[split] = hits[0]
                break
    return found


def split_layout(path: Path, what: str, exts: tuple[str, ...]) -> RawFiles | None:
    """Pre-split folder -> by_split; only a train file -> all; nothing -> None. A folder with
    a train file and only one of valid/test is an error (ambiguous)."""
    found = find_split_files(path, exts)
    if {"train", "valid", "test"} <= found.keys():
        return RawFiles(by_split={k: [found[k]] for k in ("train", "valid", "test")})
    if "train" in found and len(found) > 1:
        missing = sorted({"valid", "test"} - found.keys())
        raise FileNotFoundError(
            f"{path} holds {', '.join(p.name for p in found.values())} but no {missing[0]} "
            f"file: give a complete train/valid(dev)/test set of {what} files, or only the "
            "train file (it is then split by ratio)"
        )
    if "train" in found:
        return RawFiles(all=[found["train"]])
    return None


def unique_lookup(table: pl.DataFrame, key: str, path: Path, on_bad_row: str,
                  report: BadRowReport | None) -> pl.DataFrame:
    """A lookup (side) table with each ``key`` once. A repeated key would duplicate every main
    row that joins on it (rows from nowhere), so it is an error naming both lines; with
    ``on_bad_row="skip"`` the first line of each key is kept and the repeats are skipped and
    counted in ``report`` under the table's file name. Line numbers come from ``__row``."""
    dup = table.filter(pl.col(key).is_duplicated())
    if dup.height == 0:
        return table
    lines = pl.col(ROW_COL) if ROW_COL in table.columns else pl.int_range(pl.len()) + 2  # header = line 1
    first = (table.with_columns(lines.alias("__line")).filter(pl.col(key).is_duplicated())
             .sort("__line").group_by(key, maintain_order=True).agg(pl.col("__line").head(2)).row(0))
    value, (line_a, line_b) = first[0], first[1]
    msg = f"{path}: line {line_b}: duplicate {key} {value!r} (already on line {line_a})"
    if on_bad_row == "fail":
        raise BadInputError(f"{msg}: a repeated key would duplicate the rows that join on it "
                            "(use --on-bad-row skip to keep the first line of each key and skip the repeats)")
    kept = table.filter(pl.col(key).is_first_distinct())
    if report is not None:
        report.add(f"{Path(path).name}: duplicate {key}", table.height - kept.height, msg, side_table=Path(path).name)
    return kept


def session_fields(gap: float | None, max_sessions: int = 16) -> list[BehaviourField]:
    """The derived ``session`` field of a preset's behaviour ``hist`` (sessions cut where two
    behaviours lie more than ``gap`` seconds apart, from its ``dt`` field), or none without a gap."""
    if gap is None:
        return []
    return [BehaviourField(name="session", sessions=SessionSplit(of="dt", gap=gap, max_sessions=max_sessions))]

