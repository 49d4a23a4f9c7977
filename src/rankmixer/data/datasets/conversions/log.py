"""The conversion log: one row per click, with when (if ever) it converted, as far as the log saw.

Columns (every reader and generator of conversion data produces them):

* ``click_ts``: the click's time, int64 seconds;
* ``conv_ts``: the conversion's time, int64 seconds, or null when no conversion was seen by the
  log's end;
* ``observed_until``: the log's end (int64 seconds, one value per log file): conversions after
  it are not in the log yet;
* ``advertiser``: whose delay model the row follows (a string);
* any features.

A label for a conversion window ``T`` (seconds) is ``conv_ts - click_ts <= T``; it is *known*
only when ``click_ts + T <= observed_until``. A click closer than ``T`` to the log's end is
*censored* for that window: it may still convert inside it, so it is dropped from that window's
rows, never labelled 0 (:func:`window_label`, :func:`uncensored`). Bad rows (no click time, a
conversion before its click, anything after the log's end) are errors naming the row
(:func:`check_log`).
"""

from __future__ import annotations

import polars as pl

from rankmixer.data.reader import BadInputError

DAY_S = 86_400  # seconds per day: windows are given in days, timestamps are seconds
CLICK, CONV, END, ADVERTISER = "click_ts", "conv_ts", "observed_until", "advertiser"
LOG_COLUMNS = (CLICK, CONV, END, ADVERTISER)


class ConversionLogError(BadInputError):
    """A conversion log row that breaks the log's rules; the message names the file and row."""


def window_seconds(days: float, what: str = "window") -> int:
    """A window given in days as whole seconds; a window must be positive and finite."""
    if not isinstance(days, (int, float)) or isinstance(days, bool) or not 0 < days < float("inf"):
        raise ValueError(f"{what} must be a positive number of days, got {days!r}")
    return round(days * DAY_S)


def window_label(window_s: int) -> pl.Expr:
    """1 if the click converted within ``window_s`` seconds, else 0 (meaningful on uncensored rows)."""
    conv = pl.col(CONV).is_not_null() & ((pl.col(CONV) - pl.col(CLICK)) <= window_s)
    return conv.cast(pl.Int8)


def uncensored(window_s: int) -> pl.Expr:
    """True where the log followed the click for the whole window, so its window label is known."""
    return (pl.col(CLICK) + window_s) <= pl.col(END)


def bad_row_reasons() -> dict[str, pl.Expr]:
    """Each rule of the log as (reason, expression true on the rows that break it)."""
    click, conv, end = pl.col(CLICK), pl.col(CONV), pl.col(END)
    return {
        "no click time": click.is_null(),
        "no end of log (observed_until)": end.is_null(),
        "conversion before its click": conv.is_not_null() & (conv < click),
        "click after the end of the log": click > end,
        "conversion after the end of the log": conv.is_not_null() & (conv > end),
    }


def check_log(df: pl.DataFrame, where: str, row_col: str = "__row") -> None:
    """Raise a :class:`ConversionLogError` naming ``where`` and the first bad row (its
    ``row_col`` value: the line or row number) of the first rule it breaks."""
    for reason, bad in bad_row_reasons().items():
        hit = df.filter(bad.fill_null(False))
        if hit.height:
            row = hit.row(0, named=True)
            shown = {k: row.get(k) for k in (CLICK, CONV, END)}
            raise ConversionLogError(f"{where}: line/row {row.get(row_col, '?')}: {reason} ({shown}); "
                                     f"{hit.height} such row(s)")


def window_rows(lf: pl.LazyFrame, window_s: int, label: str = "conversion") -> pl.LazyFrame:
    """The rows whose label for the window of ``window_s`` seconds is known, with that label as
    column ``label``: the censored rows (clicked less than the window before the log's end) are
    dropped, never labelled 0."""
    return lf.filter(uncensored(window_s)).with_columns(window_label(window_s).alias(label))
