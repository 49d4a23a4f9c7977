"""From an impression log to training rows with page histories (RACP's input).

An impression log has one row per exposed item: ``user``, ``request``, ``time`` (any increasing
number: seconds, a date's ordinal), ``position`` (within the request's page), ``item``, ``cat``
and ``click`` (0/1), plus any columns to carry along (``bayes_p`` of the synthetic logs).

:func:`build_rows` orders each user's requests by ``(time, request)`` (the file's row order does
not matter) and makes every exposure a row: its click is the label, its item the candidate,
and its history the user's ``max_pages`` previous requests (pages), each its first
``page_size`` items by position, oldest page first, as "|"-joined columns:

* ``page_item``, ``page_cat``, ``page_click``: every exposure of those pages with its feedback;
* ``page_ago``: how many requests back the page is (``max_pages`` ... 1, non-increasing),
  the field a ``sessions: {of: ago, gap: 0.5}`` split turns into a page index;
* ``click_item``, ``click_cat``: the clicked items of those pages only (DIN on clicks).

Empty histories (a user's first request) are nulls. Bad input is an error naming what and
where: a missing column, a null in a key column or in ``click`` (missing feedback), a click
other than 0/1, two exposures at the same (request, position), and a request whose rows
disagree on its user or time. Pages longer than ``page_size`` keep their first ``page_size``
positions in the histories (every exposure is still a row); the count of dropped history
items is in the returned report.
"""

from __future__ import annotations

import polars as pl

KEYS = ("user", "request", "time", "position", "item", "cat")
HISTORY_COLUMNS = ("page_item", "page_cat", "page_click", "page_ago", "click_item", "click_cat")


def _check(log: pl.DataFrame, where: str) -> None:
    missing = [c for c in (*KEYS, "click") if c not in log.columns]
    if missing:
        raise ValueError(f"{where}: impression log lacks column(s) {missing}")
    for c in (*KEYS, "click"):
        nulls = log.with_row_index("row").filter(pl.col(c).is_null())
        if nulls.height:
            r = nulls.row(0, named=True)
            what = "missing feedback (click)" if c == "click" else f"null {c}"
            raise ValueError(f"{where}: {what} at row {r['row']} (request {r['request']}, position {r['position']}); "
                             f"{nulls.height} such row(s)")
    bad = log.with_row_index("row").filter(~pl.col("click").cast(pl.Int64, strict=False).is_in([0, 1]))
    if bad.height:
        r = bad.row(0, named=True)
        raise ValueError(f"{where}: click must be 0 or 1, got {r['click']!r} at row {r['row']} (request {r['request']})")
    dup = log.group_by("request", "position").agg(pl.len()).filter(pl.col("len") > 1)
    if dup.height:
        r = dup.sort("request", "position").row(0, named=True)
        raise ValueError(f"{where}: {dup.height} duplicate (request, position) pair(s), e.g. request {r['request']} "
                         f"position {r['position']} appears {r['len']} times")
    split = log.group_by("request").agg(pl.col("user").n_unique().alias("users"), pl.col("time").n_unique().alias("times"))
    bad = split.filter((pl.col("users") > 1) | (pl.col("times") > 1))
    if bad.height:
        r = bad.sort("request").row(0, named=True)
        raise ValueError(f"{where}: request {r['request']} has {r['users']} user(s) and {r['times']} time(s); a request "
                         "is one page shown to one user at one time")


def _joined(values: pl.Expr) -> pl.Expr:
    """A list column as one "|"-joined string, null when empty."""
    s = values.list.eval(pl.element().cast(pl.Utf8)).list.join("|")
    return pl.when(values.list.len() > 0).then(s).otherwise(None)


def build_rows(log: pl.DataFrame, max_pages: int, page_size: int, where: str = "impression log") -> tuple[pl.DataFrame, dict]:
    """(rows, report): the training rows of ``log`` (see the module docstring) in time order per
    user, and ``{"rows", "requests", "users", "truncated_history_items"}``."""
    _check(log, where)
    log = log.with_columns(pl.col("click").cast(pl.Int8))
    requests = (log.select("user", "request", "time").unique()
                .sort("user", "time", "request")
                .with_columns(pl.int_range(pl.len()).over("user").alias("k")))
    ordered = log.join(requests.select("request", "k"), on="request").sort("user", "k", "position")
    kept = ordered.with_columns(pl.int_range(pl.len()).over("request").alias("slot")).filter(pl.col("slot") < page_size)
    truncated = ordered.height - kept.height
    clicked = pl.col("click") == 1
    page_lists = ("page_item", "page_cat", "page_click", "click_item", "click_cat")  # page_ago: from the lag
    pages = kept.group_by("user", "k", maintain_order=True).agg(
        pl.col("item").alias("page_item"), pl.col("cat").alias("page_cat"), pl.col("click").cast(pl.Int64).alias("page_click"),
        pl.col("item").filter(clicked).alias("click_item"), pl.col("cat").filter(clicked).alias("click_cat"))
    hist = requests.select("user", "k")
    lists: dict[str, list[pl.Expr]] = {c: [] for c in HISTORY_COLUMNS}
    for lag in range(max_pages, 0, -1):  # oldest page first
        p = pages.with_columns((pl.col("k") + lag).alias("k")).rename({c: f"{c}_{lag}" for c in page_lists})
        hist = hist.join(p, on=["user", "k"], how="left")
        for c in page_lists:
            lists[c].append(pl.col(f"{c}_{lag}").cast(pl.List(pl.Int64)).fill_null(pl.lit([], dtype=pl.List(pl.Int64))))
        lists["page_ago"].append(lists["page_item"][-1].list.eval(pl.lit(lag, dtype=pl.Int64)))
    hist = hist.with_columns([_joined(pl.concat_list(lists[c])).alias(c) for c in HISTORY_COLUMNS])
    hist = hist.select("user", "k", *HISTORY_COLUMNS)
    rows = ordered.join(hist, on=["user", "k"], how="left").drop("k")
    report = {"rows": rows.height, "requests": requests.height, "users": requests["user"].n_unique(),
              "truncated_history_items": truncated}
    return rows, report
