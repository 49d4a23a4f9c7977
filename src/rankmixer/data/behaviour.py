"""Behaviour sequences before encoding: raw per-field columns -> aligned lists, and their checks.

A behaviour feature (see :class:`~rankmixer.data.schema.BehaviourFeature`) reads one raw column
per per-position field, each a string of values joined by the separator (or, from Parquet or a
request, a list). :func:`split_behaviour` turns every field into a ``List[str]`` column named
``<behaviour>__<field>`` that keeps one element per position, so the fields stay aligned: an
empty value between separators is a missing value at that position (``null``, later the OOV
id), not a dropped one. A null or empty raw string is an empty history. A derived session field (``sessions:``) is
computed here from its time field, so preparation and serving cut sessions the same way.

:func:`check_behaviours` finds the rows preparation must not encode: fields of one behaviour
with different numbers of values (the positions would no longer line up), values of a numeric
(bucketized) field that are not non-negative finite numbers (a time gap or a count is never
negative), and values of a field with an ``order`` that break it (behaviours not sorted oldest
first; missing values are skipped). Like every bad row, they stop the run with an error naming the file, the
line/row and the raw column, or, with ``on_bad_row="skip"``, are dropped and counted.
"""

from __future__ import annotations

import polars as pl

from rankmixer.data.feature_map import behaviour_column
from rankmixer.data.reader import FILE_COL, ROW_COL, BadInputError, BadRowReport, OnBadRow
from rankmixer.data.schema import BehaviourFeature, Schema, SessionSplit

__all__ = ["check_behaviours", "session_index", "split_behaviour"]

_EMPTY = pl.lit([], dtype=pl.List(pl.Utf8))


def session_index(split: pl.Expr, s: SessionSplit) -> pl.Expr:
    """Each position's session index counted from the newest (see
    :class:`~rankmixer.data.schema.SessionSplit`), from the split list of the time field
    ``split`` (``List[str]``): a ``List[Int32]`` of the same length."""
    el = pl.element()
    t = el.cast(pl.Float64, strict=False).forward_fill()
    cut = (t.diff().abs() > s.gap).fill_null(False)
    if s.max_session_len is not None:
        idx = pl.int_range(pl.len())
        start = pl.when(cut | (idx == 0)).then(idx).otherwise(None).forward_fill()
        pos = idx - start
        cut = cut | ((pos % s.max_session_len == 0) & (pos > 0))
    from_oldest = cut.cast(pl.Int32).cum_sum()
    return split.list.eval((from_oldest.max() - from_oldest).clip(upper_bound=s.max_sessions - 1))


def split_behaviour(f: BehaviourFeature, dtypes: pl.Schema) -> list[pl.Expr]:
    """One ``List[str]`` expression per field of ``f`` (aliased ``<behaviour>__<field>``), one
    element per position, ``null`` where the value is missing; a session field (derived) is its
    ``List[Int32]`` of session indices. ``dtypes``: the frame's schema, to tell string columns
    (split here) from list columns (Parquet, requests)."""
    split: dict[str, pl.Expr] = {}
    for b in f.read_fields:
        src = f.source_of(b)
        dt = dtypes[src]
        if isinstance(dt, pl.List):
            e = pl.col(src).list.eval(pl.element().cast(pl.Utf8).str.strip_chars().replace("", None))
        elif dt == pl.Utf8 or dt.is_numeric():  # a number is a one-position history
            s = pl.col(src).cast(pl.Utf8).str.strip_chars()
            e = pl.when(s.is_null() | (s == "")).then(_EMPTY).otherwise(
                s.str.split(f.separator).list.eval(pl.element().str.strip_chars().replace("", None)))
        else:
            raise BadInputError(f"behaviour {f.name!r} field {b.name!r}: column {src!r} must be a string or "
                                f"a list, got {dt}")
        split[b.name] = e.fill_null(_EMPTY)
    return [(session_index(split[b.sessions.of], b.sessions) if b.sessions is not None else split[b.name])
            .alias(behaviour_column(f.name, b.name)) for b in f.fields]


def _problems(f: BehaviourFeature) -> list[tuple[pl.Expr, str, str]]:
    """(row mask, raw column, reason) of every way a row of ``f`` can be bad (after splitting)."""
    cols = [behaviour_column(f.name, b.name) for b in f.fields]
    first = pl.col(cols[0]).list.len()
    out = [(pl.col(c).list.len() != first, f.source_of(b), f"behaviour {f.name}: fields of different lengths")
           for c, b in zip(cols[1:], f.fields[1:])]
    for c, b in zip(cols, f.fields):
        if b.bucketize is None:
            continue
        el = pl.element()
        num = el.cast(pl.Float64, strict=False)
        bad = (el.is_not_null() & num.is_null()) | (num.is_not_null() & (~num.is_finite() | (num < 0)))
        out.append((pl.col(c).list.eval(bad).list.any(), f.source_of(b),
                    f"behaviour {f.name}: field {b.name} not a non-negative number"))
        if b.order is not None:
            step = pl.col(c).list.eval(num.drop_nulls().diff().drop_nulls())
            wrong = step.list.eval(el > 0 if b.order == "non_increasing" else el < 0).list.any()
            out.append((wrong, f.source_of(b), f"behaviour {f.name}: field {b.name} out of order"))
    return out


def _detail(f: BehaviourFeature, row: dict, source: str) -> str:
    """What is wrong with ``source`` on an offending row (values as split)."""
    by_source = {f.source_of(b): b for b in f.fields}
    b = by_source[source]
    values = row[behaviour_column(f.name, b.name)]
    if b.bucketize is not None:
        numbers = []
        for v in values:
            try:
                x = float(v) if v is not None else 0.0
            except ValueError:
                return f"value {v!r} of field {b.name!r} is not a number"
            if not x >= 0 or x == float("inf"):
                return f"value {v!r} of field {b.name!r} is not a non-negative finite number"
            if v is not None:
                numbers.append(v)
        if b.order is not None and len(values) == len(row[behaviour_column(f.name, f.fields[0].name)]):
            rule = "must not increase" if b.order == "non_increasing" else "must not decrease"
            return (f"values {'|'.join(numbers)} of field {b.name!r} {rule} from the oldest position to the "
                    "newest (behaviours oldest first)")
    first = f.fields[0]
    n0 = len(row[behaviour_column(f.name, first.name)])
    return (f"{len(values)} values, but column {f.source_of(first)!r} has {n0}: every field of behaviour "
            f"{f.name!r} needs one value per position")


def check_behaviours(lf: pl.LazyFrame, schema: Schema, on_bad_row: OnBadRow, raw_names: list[str],
                     report: BadRowReport) -> pl.LazyFrame:
    """The rows of ``lf`` (split, see :func:`split_behaviour`) whose behaviours are well formed:
    raise :class:`BadInputError` at the first bad one (``fail``) or drop and count them
    (``skip``, one count per row however many of its fields are bad)."""
    checks = [(f, *p) for f in schema.features if isinstance(f, BehaviourFeature) for p in _problems(f)]
    if not checks:
        return lf
    bad = pl.any_horizontal([mask for _, mask, _, _ in checks])
    if on_bad_row == "fail":
        flags = [mask.alias(f"__bad{i}") for i, (_, mask, _, _) in enumerate(checks)]
        cols = list(dict.fromkeys(behaviour_column(f.name, b.name) for f, *_ in checks for b in f.fields))
        first = lf.filter(bad).select([FILE_COL, ROW_COL, *cols, *flags]).head(1).collect()
        if first.height:
            r = first.row(0, named=True)
            i = next(i for i in range(len(checks)) if r[f"__bad{i}"])
            f, _, source, _ = checks[i]
            raise BadInputError(f"{raw_names[r[FILE_COL]]}: line/row {r[ROW_COL]}, column {source!r}: "
                                f"{_detail(f, r, source)} (use --on-bad-row skip to skip such rows)")
        return lf
    # One count per row and reason (a row may have several short fields), one per row in all.
    reasons: dict[str, pl.Expr] = {}
    for _, mask, _, reason in checks:
        reasons[reason] = reasons[reason] | mask if reason in reasons else mask
    names = list(reasons)
    counts = lf.select([bad.sum().alias("__any")]
                       + [reasons[r].sum().alias(f"__n{i}") for i, r in enumerate(names)]).collect()
    row = counts.row(0, named=True)
    for i, reason in enumerate(names):
        if row[f"__n{i}"]:
            ex = lf.filter(reasons[reason]).select(FILE_COL, ROW_COL).head(1).collect().row(0, named=True)
            report.add(reason, int(row[f"__n{i}"]),
                       f"{raw_names[ex[FILE_COL]]}: line/row {ex[ROW_COL]}: {reason}")
    # A row bad for several reasons was counted once per reason above: count it once.
    report.rows_skipped -= sum(int(row[f"__n{i}"]) for i in range(len(names))) - int(row["__any"])
    return lf.filter(~bad)
