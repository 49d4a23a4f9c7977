"""Alibaba Taobao UserBehavior (Tianchi dataset 649): post-view conversion prediction.

Raw layout: ``UserBehavior.csv``, no header, five fields per row::

    user_id,item_id,category_id,behavior_type,timestamp
    behavior_type in {pv, cart, fav, buy};  timestamp: unix seconds

The log covers 2017-11-25 .. 2017-12-03 in China time (UTC+8), i.e. unix seconds
[1511539200, 1512316800). About 100M events from ~1M users.

Task: one example per ``pv`` (page view) event; three labels tell whether the same user later
``buy``s, adds to ``cart`` or ``fav``ourites the same item within ``horizon_s`` seconds of the
view (default one day): label = 1 iff an event of that type for (user, item) has a timestamp t'
with ``t <= t' <= t + horizon_s``. (A same-second event counts; the shared sample has none.)
Repeated views of one item before a purchase are all positives. Events of any other behaviour
name are ignored.

The canonical frame and the choices behind it: :class:`TaobaoUserBehaviorPreset`.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from rankmixer.data.datasets.base import (
    DatasetPreset,
    RawFiles,
    TransformContext,
    register_preset,
)
from rankmixer.data.datasets.common import behaviour_history, bookkeeping, session_fields, user_history
from rankmixer.data.reader import FILE_COL, ROW_COL
from rankmixer.data.schema import (
    BehaviourFeature,
    BehaviourField,
    Bucketize,
    CategoricalFeature,
    DaySpec,
    LabelSpec,
    RawColumn,
    Schema,
    SequenceFeature,
    SourceSpec,
    SplitSpec,
)

# Official window, China time: [2017-11-25 00:00 +08:00, 2017-12-04 00:00 +08:00).
LOG_START = 1511539200
LOG_END = 1512316800
CHINA_UTC_OFFSET_S = 8 * 3600
TARGETS = ("buy", "cart", "fav")
BEHAVIOUR_TYPES = ("pv", *TARGETS)

SOURCE = SourceSpec(
    format="csv",
    has_header=False,
    columns=[
        RawColumn(name="user_id", type="int", required=True),
        RawColumn(name="item_id", type="int", required=True),
        RawColumn(name="category_id", type="int", required=True),
        RawColumn(name="behavior_type", type="str", required=True),
        RawColumn(name="timestamp", type="int", required=True),
    ],
)


@register_preset
class TaobaoUserBehaviorPreset(DatasetPreset):
    """Options: ``horizon_s`` (label window in seconds after the view, default 86400; None =
    to the end of the log), ``drop_censored`` (default True), ``drop_bad_timestamps``
    (default True), ``max_len`` (history length, default 20), ``min_count`` (for the id
    vocabularies, default 1), ``behaviours`` (default False: add the behaviour sequence
    ``hist``, below), ``behaviour_max_len`` (its length, default 50) and ``days`` (default
    False: the training split prepared by China-time day, for ``train.streaming``).

    Right-censoring: a view less than ``horizon_s`` before the end of the log cannot see its whole
    window, so its labels would be biased towards 0 -- and a time split puts exactly those views in
    the test set. With ``drop_censored=True`` (default) views after ``log_end - horizon_s``
    (``log_end`` = the last valid timestamp in the data) are dropped as examples (the events in
    that last stretch still count for the labels of earlier views), so every kept example, the
    time split's test part included, has its full horizon inside the log. With the default one-day
    horizon that keeps 8 of the 9 days; in the shared sample the delay from a view to the next
    purchase of the same item has a median of about 45 minutes, 75% are within 13 hours and 90%
    within 2 days. ``horizon_s=None`` means "until the end of the log" (nothing dropped;
    censoring then grows towards the end of the log -- avoid it with a time split).

    Bad timestamps: the full log holds some events outside the official window (the shared
    84,475-row sample has 35, the earliest in September 2017). With ``drop_bad_timestamps=True``
    (default) they are removed before anything else (neither examples, nor labels, nor history);
    ``extras()`` reports how many were dropped (counted on the raw file).

    Canonical frame (one row per kept pv event; rows keep the file order; ``__file``/``__row``):

    ===========  ===========  ====================================================================
    column       dtype        meaning
    ===========  ===========  ====================================================================
    buy          Int64        bought within the horizon
    cart         Int64        added to cart within the horizon
    fav          Int64        favourited within the horizon
    user_id      Int64        group key
    item_id      Int64
    category_id  Int64
    hour         Int64        hour of day, China time (UTC+8), 0..23
    weekday      Int64        weekday, China time, 1 = Monday .. 7 = Sunday
    hist_items   List[Int64]  the user's previous *pv* items, strictly earlier timestamps only,
                              oldest first, the last ``max_len``; pv events sharing a second see
                              none of each other (ties ordered by file position)
    hist_cats    List[Int64]  the categories of ``hist_items`` (same length and order)
    timestamp    Int64        unix seconds (time column)
    ===========  ===========  ====================================================================

    With ``behaviours=True`` the frame also has the behaviour sequence ``hist`` (schema type
    ``behaviour``) in the raw behaviour layout, one string column per per-position field, values
    joined by "|", oldest first: the user's previous events of *every* type (pv, cart, fav, buy;
    other names ignored), strictly earlier timestamps only (events sharing the view's second,
    e.g. a same-second purchase, are left out: their order is unknown and they may be the
    label), ties ordered by file position, the most recent ``behaviour_max_len``:
    ``hist_item`` (shares ``item_id``'s table), ``hist_cat`` (shares ``category_id``'s),
    ``hist_type`` (own vocabulary) and ``hist_dt`` (seconds from the event to the view,
    positive; log buckets). The existing columns are unchanged.
    """

    name = "taobao-userbehavior"
    description = (
        "Alibaba Taobao UserBehavior: for each page view, predict buy / cart / fav of the same "
        "item by the same user within a horizon; pv histories; time split."
    )
    downloads = ()
    manual_instructions = (
        "Taobao UserBehavior needs a (free) Tianchi/Aliyun login, so it cannot be downloaded "
        "automatically. Sign in at https://tianchi.aliyun.com/dataset/649 , download "
        "UserBehavior.csv.zip, unzip it and point at UserBehavior.csv (or its folder)."
    )

    def __init__(
        self,
        *,
        horizon_s: int | None = 86400,
        drop_censored: bool = True,
        drop_bad_timestamps: bool = True,
        max_len: int = 20,
        min_count: int = 1,
        behaviours: bool = False,
        behaviour_max_len: int = 50,
        session_gap: float | None = None,
        days: bool = False,
    ) -> None:
        if horizon_s is not None and horizon_s <= 0:
            raise ValueError(f"horizon_s must be positive or None, got {horizon_s}")
        if behaviour_max_len < 1:
            raise ValueError(f"behaviour_max_len must be at least 1, got {behaviour_max_len}")
        self.behaviours = behaviours
        self.behaviour_max_len = behaviour_max_len
        if session_gap is not None and session_gap <= 0:
            raise ValueError(f"session_gap must be positive seconds, got {session_gap}")
        self.session_gap = session_gap
        self.days = days
        self.horizon_s = horizon_s
        self.drop_censored = drop_censored
        self.drop_bad_timestamps = drop_bad_timestamps
        self.max_len = max_len
        self.min_count = min_count

    def behaviour(self) -> BehaviourFeature:
        """The behaviour sequence ``hist`` added by ``behaviours=True``."""
        return BehaviourFeature(
            name="hist",
            max_len=self.behaviour_max_len,
            fields=[
                BehaviourField(name="item", share_with="item_id"),
                BehaviourField(name="cat", share_with="category_id"),
                BehaviourField(name="type"),
                BehaviourField(name="dt", bucketize=Bucketize(method="log"), order="non_increasing"),
                *session_fields(self.session_gap),
            ],
        )

    def schema(self) -> Schema:
        mc = self.min_count
        behaviours = [self.behaviour()] if self.behaviours else []
        return Schema(
            name=self.name,
            source=SOURCE,
            labels=[LabelSpec(name=t) for t in TARGETS],
            features=[
                CategoricalFeature(name="user_id", min_count=mc),
                CategoricalFeature(name="item_id", min_count=mc),
                CategoricalFeature(name="category_id", min_count=mc),
                CategoricalFeature(name="hour"),
                CategoricalFeature(name="weekday"),
                SequenceFeature(name="hist_items", max_len=self.max_len, share_with="item_id"),
                SequenceFeature(
                    name="hist_cats", max_len=self.max_len, share_with="category_id"
                ),
                *behaviours,
            ],
            group_key="user_id",
            time_column="timestamp",
            feature_groups={
                "user": ["user_id", "hist_items", "hist_cats", *(b.name for b in behaviours)],
                "item": ["item_id", "category_id"],
                "context": ["hour", "weekday"],
            },
            split=SplitSpec(method="time", ratios=(0.8, 0.1, 0.1)),
            # days=True: the training split by China-time day, for streaming training.
            **({"days": DaySpec(seconds=86_400, offset=CHINA_UTC_OFFSET_S)} if self.days else {}),
        )

    def raw_files(self, path: Path) -> RawFiles:
        path = Path(path)
        if path.is_file():
            return RawFiles(all=[path])
        if not path.exists():
            raise FileNotFoundError(f"Taobao UserBehavior path {path} does not exist")
        f = path / "UserBehavior.csv"
        if not f.is_file():
            raise FileNotFoundError(
                f"UserBehavior.csv not found in {path}. {self.manual_instructions}"
            )
        return RawFiles(all=[f])

    def transform(self, lf: pl.LazyFrame, ctx: TransformContext) -> pl.LazyFrame:
        keep = bookkeeping(lf)
        ts = pl.col("timestamp")
        lf = lf.select(
            *keep,
            pl.col("user_id").cast(pl.Int64),
            pl.col("item_id").cast(pl.Int64),
            pl.col("category_id").cast(pl.Int64),
            pl.col("behavior_type").str.strip_chars().str.to_lowercase(),
            ts.cast(pl.Int64),
        )
        if self.drop_bad_timestamps:
            lf = lf.filter(ts.is_between(LOG_START, LOG_END, closed="left"))
        in_window = ts.is_between(LOG_START, LOG_END, closed="left")
        lf = lf.with_columns(
            pl.coalesce(ts.filter(in_window).max(), ts.max()).alias("__log_end")
        )
        behaviour_columns, examples = [], lf
        if self.behaviours:
            # Histories over every event type; only the pv rows (the examples) are kept below.
            hist = self.behaviour()
            examples = behaviour_history(
                lf.filter(pl.col("behavior_type").is_in(BEHAVIOUR_TYPES)),
                user="user_id",
                time="timestamp",
                tiebreak=(FILE_COL, ROW_COL),
                fields={"hist_item": "item_id", "hist_cat": "category_id",
                        "hist_type": "behavior_type"},
                dt="hist_dt",
                max_len=hist.max_len,
            )
            behaviour_columns = hist.columns

        pv = examples.filter(pl.col("behavior_type") == "pv").sort("timestamp")
        for target in TARGETS:
            tcol = f"__t_{target}"
            events = (
                lf.filter(pl.col("behavior_type") == target)
                .select("user_id", "item_id", ts.alias(tcol))
                .sort(tcol)
            )
            # First event of that type at or after the view, for the same (user, item).
            pv = pv.join_asof(
                events,
                left_on="timestamp",
                right_on=tcol,
                by=["user_id", "item_id"],
                strategy="forward",
                check_sortedness=False,  # both sides are sorted by time just above
            )
            hit = pl.col(tcol).is_not_null()
            if self.horizon_s is not None:
                hit = hit & (pl.col(tcol) - ts <= self.horizon_s)
            pv = pv.with_columns(hit.cast(pl.Int64).alias(target)).drop(tcol)

        pv = user_history(
            pv,
            user="user_id",
            time="timestamp",
            tiebreak=(FILE_COL, ROW_COL),
            columns={"hist_items": "item_id", "hist_cats": "category_id"},
            max_len=self.max_len,
        )
        if self.drop_censored and self.horizon_s is not None:
            pv = pv.filter(ts <= pl.col("__log_end") - self.horizon_s)

        local = pl.from_epoch(ts + CHINA_UTC_OFFSET_S, time_unit="s")
        return pv.sort([FILE_COL, ROW_COL]).select(
            *keep,
            *TARGETS,
            "user_id",
            "item_id",
            "category_id",
            local.dt.hour().cast(pl.Int64).alias("hour"),
            local.dt.weekday().cast(pl.Int64).alias("weekday"),
            "hist_items",
            "hist_cats",
            *behaviour_columns,
            "timestamp",
        )

    def extras(self, path: Path) -> dict:
        """The label definition and how many raw rows the time window / censoring dropped
        (one extra pass over two columns of the raw file)."""
        out: dict = {
            "horizon_s": self.horizon_s,
            "drop_censored": self.drop_censored,
            "drop_bad_timestamps": self.drop_bad_timestamps,
            "valid_window": [LOG_START, LOG_END],
        }
        try:
            files = self.raw_files(path).all
        except FileNotFoundError:
            return out
        cols = ["behavior_type", "timestamp"]
        lf = pl.concat(
            [
                pl.scan_csv(
                    f,
                    has_header=False,
                    new_columns=[c.name for c in SOURCE.columns],
                    schema_overrides={"behavior_type": pl.String, "timestamp": pl.Int64},
                ).select(cols)
                for f in files
            ]
        )
        ts = pl.col("timestamp")
        bad = ~ts.is_between(LOG_START, LOG_END, closed="left")
        stats = lf.select(
            pl.len().alias("raw_rows"),
            bad.sum().alias("bad_timestamp_rows"),
            ts.filter(~bad).max().alias("log_end"),
        ).collect()
        out.update({k: v for k, v in stats.row(0, named=True).items()})
        if self.drop_censored and self.horizon_s is not None and out["log_end"] is not None:
            cut = out["log_end"] - self.horizon_s
            out["censored_pv_dropped"] = (
                lf.filter(~bad & (pl.col("behavior_type") == "pv") & (ts > cut))
                .select(pl.len())
                .collect()
                .item()
            )
        if not self.drop_bad_timestamps:
            out["bad_timestamp_rows_kept"] = out.pop("bad_timestamp_rows")
        return out
