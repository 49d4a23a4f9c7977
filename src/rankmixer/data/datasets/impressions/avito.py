"""The Avito Context Ad Clicks files (Kaggle 2015; RACP's public data) as an impression log.

Three tab-separated files with a header row, as Avito published them:

* ``SearchInfo.tsv``: ``SearchID, SearchDate, IPID, UserID, IsUserLoggedOn, SearchQuery,
  LocationID, CategoryID, SearchParams``: one row per search (a request: one page);
* ``trainSearchStream.tsv``: ``SearchID, AdID, Position, ObjectType, HistCTR, IsClick``: one row
  per ad shown on a search's page;
* ``AdsInfo.tsv``: ``AdID, LocationID, CategoryID, Params, Price, Title, IsContext``.

:func:`read_avito` joins them into the log :func:`.builder.build_rows` takes: ``user`` =
UserID, ``request`` = SearchID, ``time`` = SearchDate in seconds, ``position`` = Position,
``item`` = AdID, ``cat`` = the ad's CategoryID, ``click`` = IsClick. Only contextual ads
(``ObjectType`` 3) carry a click in Avito's data, so the log keeps those and counts the others
it leaves out; an ad missing from ``AdsInfo.tsv`` gets category -1 (counted). A contextual ad
with no IsClick is missing feedback: :func:`.builder.build_rows` names it. A missing file or
column is an error naming it; a search in the stream but not in ``SearchInfo.tsv`` is an error
naming the SearchID.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

FILES = {
    "SearchInfo.tsv": ("SearchID", "SearchDate", "UserID"),
    "trainSearchStream.tsv": ("SearchID", "AdID", "Position", "ObjectType", "IsClick"),
    "AdsInfo.tsv": ("AdID", "CategoryID"),
}
CONTEXTUAL = 3


def _read(folder: Path, name: str) -> pl.DataFrame:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (an Avito Context Ad Clicks folder holds {sorted(FILES)})")
    df = pl.read_csv(path, separator="\t", infer_schema_length=0, quote_char=None)
    missing = [c for c in FILES[name] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return df.select(FILES[name])


def read_avito(folder: str | Path) -> tuple[pl.DataFrame, dict]:
    """(impression log, report) from an Avito folder (see the module docstring)."""
    folder = Path(folder)
    search, stream, ads = (_read(folder, n) for n in FILES)
    report = {"stream_rows": stream.height}
    stream = stream.with_columns(pl.col("ObjectType").cast(pl.Int64, strict=False))
    context = stream.filter(pl.col("ObjectType") == CONTEXTUAL)
    report["non_contextual_skipped"] = stream.height - context.height
    search = search.with_columns(
        pl.col("SearchDate").str.strptime(pl.Datetime, "%Y-%m-%d %H:%M:%S%.f", strict=False).alias("_t"))
    bad = search.filter(pl.col("_t").is_null())
    if bad.height:
        raise ValueError(f"{folder / 'SearchInfo.tsv'}: SearchID {bad['SearchID'][0]}: unreadable SearchDate "
                         f"{bad['SearchDate'][0]!r} (expected YYYY-MM-DD HH:MM:SS[.f])")
    joined = context.join(search, on="SearchID", how="left")
    orphan = joined.filter(pl.col("UserID").is_null())
    if orphan.height:
        raise ValueError(f"{folder / 'trainSearchStream.tsv'}: SearchID {orphan['SearchID'][0]} is not in "
                         f"SearchInfo.tsv ({orphan.height} row(s))")
    joined = joined.join(ads, on="AdID", how="left")
    report["ads_without_category"] = int(joined["CategoryID"].null_count())
    log = joined.select(
        pl.col("UserID").cast(pl.Int64).alias("user"),
        pl.col("SearchID").cast(pl.Int64).alias("request"),
        (pl.col("_t").dt.epoch("s")).alias("time"),
        pl.col("Position").cast(pl.Int64).alias("position"),
        pl.col("AdID").cast(pl.Int64).alias("item"),
        pl.col("CategoryID").cast(pl.Int64).fill_null(-1).alias("cat"),
        pl.col("IsClick").cast(pl.Int8, strict=False).alias("click"),
    )
    report["impressions"] = log.height
    return log, report
