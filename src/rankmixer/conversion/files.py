"""Personalized Interpolation on files: a conversion log in, delay rates out; two fixed-window
prediction files in, the probability of each click's window out (``rankmixer conversion``).

* :func:`read_log`: a conversion log, either Parquet/CSV files already in the log's layout
  (:mod:`rankmixer.data.datasets.conversions.log`; checked row by row) or a Criteo
  conversion-logs text file (:mod:`rankmixer.data.datasets.conversions.criteo`);
* :func:`interpolate_files`: ``p_s`` and ``p_l`` from two prediction files (``rankmixer predict``
  of the ``T_s`` and ``T_l`` runs over the same clicks, in the same order), each click's
  advertiser from the clicks file, and its window from ``--window-days`` or the clicks file's
  ``window_days`` column (a per-request field). A window outside ``[T_s, T_l]`` is an error
  (:class:`.interpolate.WindowOutOfRange`), as is an advertiser column that is missing; an
  advertiser the rates never saw gets the global rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import polars as pl

from rankmixer.conversion.delays import rates_for
from rankmixer.conversion.interpolate import interpolate, interpolation_weight
from rankmixer.core.files import TABLE_KEY, atomic_file, check_table_output, output_format
from rankmixer.data.datasets.conversions.criteo import read_criteo_conversion_log
from rankmixer.data.datasets.conversions.log import ADVERTISER, LOG_COLUMNS, check_log

TABLE_FORMATS = {".parquet": "parquet", ".csv": "csv"}
WINDOW_COLUMN = "window_days"
OUTPUT_KIND = "interpolated conversions"
OUTPUT_COLUMNS = (ADVERTISER, WINDOW_COLUMN, "alpha", "conversion_prob")


def _read_table(path: Path, what: str) -> pl.DataFrame:
    fmt = output_format(path, TABLE_FORMATS, what)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    return pl.read_parquet(path) if fmt == "parquet" else pl.read_csv(path)


def read_log(paths: Sequence[Path], fmt: str = "log", advertiser: str | None = None) -> pl.DataFrame:
    """The conversion log in ``paths``: ``fmt`` ``log`` (Parquet/CSV in the log's layout) or
    ``criteo`` (the Criteo conversion-logs text layout; ``advertiser`` names its advertiser
    column)."""
    if not paths:
        raise ValueError("no conversion log given")
    frames = []
    for path in map(Path, paths):
        if fmt == "criteo":
            frames.append(read_criteo_conversion_log(path, advertiser=advertiser)[0].select(LOG_COLUMNS))
            continue
        if fmt != "log":
            raise ValueError(f"log format must be 'log' or 'criteo', not {fmt!r}")
        df = _read_table(path, "conversion log")
        missing = [c for c in LOG_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{path}: missing conversion-log column(s) {missing} (have {df.columns})")
        df = df.select(LOG_COLUMNS).with_columns(pl.col(ADVERTISER).cast(pl.Utf8))
        check_log(df.with_row_index("__row", offset=1), str(path))
        frames.append(df)
    return pl.concat(frames)


def _probabilities(path: Path, rows: int, what: str) -> pl.Series:
    df = _read_table(path, what)
    probs = [c for c in df.columns if c.endswith("_prob")]
    if len(probs) != 1:
        raise ValueError(f"{what} {path}: expected one '<task>_prob' column (a rankmixer predict output), "
                         f"have {df.columns}")
    if df.height != rows:
        raise ValueError(f"{what} {path} has {df.height} rows, the clicks file {rows}: they must be the same clicks")
    return df[probs[0]]


def interpolate_files(short_predictions: Path, long_predictions: Path, clicks: Path, rates: dict, output: Path, *,
                      short_days: float, long_days: float, window_days: float | None = None,
                      personalised: bool = True, overwrite: bool = False) -> pl.DataFrame:
    """Write ``advertiser``, ``window_days``, ``alpha`` and ``conversion_prob`` per click into
    ``output`` (Parquet or CSV by suffix) and return the frame."""
    clicks_df = _read_table(clicks, "clicks file")
    if ADVERTISER not in clicks_df.columns:
        raise ValueError(f"clicks file {clicks}: no {ADVERTISER!r} column (have {clicks_df.columns})")
    if window_days is None:
        if WINDOW_COLUMN not in clicks_df.columns:
            raise ValueError(f"clicks file {clicks}: no {WINDOW_COLUMN!r} column; give one or --window-days")
        windows = clicks_df[WINDOW_COLUMN].cast(pl.Float64).to_numpy()
    else:
        windows = window_days
    p_s = _probabilities(short_predictions, clicks_df.height, "short-window predictions").to_numpy()
    p_l = _probabilities(long_predictions, clicks_df.height, "long-window predictions").to_numpy()
    adv = clicks_df[ADVERTISER].cast(pl.Utf8).to_list()
    beta = rates_for(rates, adv, personalised=personalised)
    out = pl.DataFrame(dict(zip(OUTPUT_COLUMNS, (
        adv,
        pl.Series([float(windows)] * len(adv)) if window_days is not None else windows,
        interpolation_weight(beta, short_days, long_days, windows),
        interpolate(p_s, p_l, beta, short_days, long_days, windows),
    ))))
    fmt = output_format(output, TABLE_FORMATS, "--output")
    # An existing file is replaced only with overwrite, and only if it is this command's output.
    check_table_output(output, OUTPUT_KIND, [short_predictions, long_predictions, clicks], overwrite,
                       csv_header=OUTPUT_COLUMNS)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(output) as tmp:
        out.write_csv(tmp) if fmt == "csv" else out.write_parquet(tmp, metadata={TABLE_KEY: OUTPUT_KIND})
    return out
