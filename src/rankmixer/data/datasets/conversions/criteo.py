"""A reader for the Criteo conversion logs layout (Chapelle, "Modeling delayed feedback in
display advertising", KDD 2014; the 2014 "Criteo Conversion Logs" release, ``data.txt``).

One click per line, tab-separated, no header: the click's timestamp (seconds), the conversion's
timestamp (empty if the click did not convert by the end of the log), 8 integer features and 9
categorical features (hashed strings); any feature may be empty. Lines are in click order, but
the reader does not rely on it. Criteo does not say which categorical field is the advertiser
(or campaign), so the caller names one (``advertiser="C3"``), or all rows are one advertiser
(``"all"``), for which personalisation has nothing to do.

The log's end (``observed_until``) is the latest timestamp in the file, click or conversion,
unless given. Type errors name the line and column (:mod:`rankmixer.data.reader`); rows that
break a conversion log's rules (:func:`.log.check_log`: no click time, a conversion before its
click, anything after the given end) are an error naming the line, or, with
``on_bad_row="skip"``, skipped and counted by reason in the returned report. The file is read into
memory (the public file, about 16M lines, fits in a few GB).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from rankmixer.data.datasets.conversions.log import ADVERTISER, CLICK, CONV, END, bad_row_reasons, check_log
from rankmixer.data.reader import ROW_COL, BadRowReport, OnBadRow, read_table
from rankmixer.data.schema import RawColumn, SourceSpec

INT_FEATURES = tuple(f"I{i}" for i in range(1, 9))
CAT_FEATURES = tuple(f"C{i}" for i in range(1, 10))

SOURCE = SourceSpec(
    format="tsv",
    has_header=False,
    columns=[RawColumn(name=CLICK, type="int"), RawColumn(name=CONV, type="int")]
    + [RawColumn(name=c, type="int") for c in INT_FEATURES]
    + [RawColumn(name=c, type="str") for c in CAT_FEATURES],
)


def read_criteo_conversion_log(
    path: str | Path,
    *,
    advertiser: str | None = None,
    observed_until: int | None = None,
    on_bad_row: OnBadRow = "fail",
) -> tuple[pl.DataFrame, BadRowReport]:
    """The file as a conversion log (columns of :mod:`.log`, then ``I1..I8``, ``C1..C9`` and
    ``__row``, the file's line number), and the report of rows read and skipped."""
    path = Path(path)
    if advertiser is not None and advertiser not in CAT_FEATURES:
        raise ValueError(f"advertiser must name a categorical column {list(CAT_FEATURES)}, got {advertiser!r}")
    report = BadRowReport()
    df = read_table(path, SOURCE, on_bad_row=on_bad_row, report=report)
    # read_table counts a file's rows under its side-table entry; this is the main file.
    counts = report.side_tables.pop(path.name, {"rows_read": df.height})
    report.rows_read = counts["rows_read"]
    if observed_until is None:
        observed_until = df.select(pl.max_horizontal(pl.col(CLICK).max(), pl.col(CONV).max())).item()
    df = df.with_columns(
        pl.lit(observed_until, dtype=pl.Int64).alias(END),
        (pl.col(advertiser).fill_null("(missing)") if advertiser else pl.lit("all")).alias(ADVERTISER),
    )
    if on_bad_row == "skip":
        for reason, bad in bad_row_reasons().items():
            hit = df.filter(bad.fill_null(False))
            if hit.height:
                report.add(reason, hit.height, f"{path}: line {hit[ROW_COL][0]}: {reason}")
                df = df.filter(~bad.fill_null(False))
    check_log(df, str(path))
    return df.select(CLICK, CONV, END, ADVERTISER, *INT_FEATURES, *CAT_FEATURES, ROW_COL), report
