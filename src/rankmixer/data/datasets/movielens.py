"""MovieLens "latest" (GroupLens): rating-based CTR-style task with user histories.

Raw layout (``ml-latest-small.zip`` / ``ml-latest.zip``, unpacked)::

    ratings.csv   userId,movieId,rating,timestamp   (header; timestamp = unix seconds, UTC)
    movies.csv    movieId,title,genres               (header; quoted titles may hold commas)

Task: ``like`` = 1 when ``rating >= 4`` (0.5 .. 5 stars). This is *not* the BARS / FuxiCTR
``MovielensLatest_x1`` task (that one is built from the tag file, with user-tag interactions as
positives and sampled negatives); ours is a plain, sample-free rating threshold, so numbers are
not comparable with that benchmark.

The canonical frame and the choices behind it: :class:`MovieLensLatestPreset`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl

from rankmixer.data.datasets.base import (
    DatasetPreset,
    Download,
    RawFiles,
    TransformContext,
    register_preset,
)
from rankmixer.data.datasets.common import (
    behaviour_history,
    bookkeeping,
    session_fields,
    unique_lookup,
    user_history,
)
from rankmixer.data.reader import FILE_COL, ROW_COL
from rankmixer.data.schema import (
    BehaviourFeature,
    BehaviourField,
    Bucketize,
    CategoricalFeature,
    DaySpec,
    LabelSpec,
    MultiCategoricalFeature,
    RawColumn,
    Schema,
    SequenceFeature,
    SourceSpec,
    SplitSpec,
)

NO_GENRES = "(no genres listed)"

RATINGS_SOURCE = SourceSpec(
    format="csv",
    has_header=True,
    columns=[
        RawColumn(name="userId", type="int", required=True),
        RawColumn(name="movieId", type="int", required=True),
        RawColumn(name="rating", type="float", required=True),
        RawColumn(name="timestamp", type="int", required=True),
    ],
)

MOVIES_SOURCE = SourceSpec(
    format="csv",
    has_header=True,
    columns=[
        RawColumn(name="movieId", type="int", required=True),
        RawColumn(name="title", type="str"),
        RawColumn(name="genres", type="str"),
    ],
)

# "Toy Story (1995)", "Fawlty Towers (1975-1979)", "Big Bang Theory, The (2007-)", maybe with
# trailing blanks; the year must close the title.
_YEAR_RE = r"\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$"

_ZIP_DIRS = {"small": "ml-latest-small", "full": "ml-latest"}


@register_preset
class MovieLensLatestPreset(DatasetPreset):
    """MovieLens latest (ml-latest-small by default; ``variant="full"`` for ml-latest).

    Options: ``max_len`` (history length, default 20), ``min_count`` (for user/movie ids,
    default 1), ``like_threshold`` (default 4.0), ``variant`` ("small" | "full": which zip
    ``download`` fetches and which unpacked folder ``raw_files`` prefers), ``behaviours``
    (default False: add the behaviour sequence ``hist``, below), ``behaviour_max_len``
    (its length, default 50) and ``period_days`` (default None: the training split prepared
    in periods of that many days since the Unix epoch, UTC, one folder each, schema ``days``:
    the set has no natural day shards, its ratings spanning years, so DistDNAS's per-day
    searches and streaming training read periods; e.g. 1461 gives four-year periods).

    Canonical frame (one row per rating; rows keep the file order; ``__file``/``__row`` kept):

    =============  ============  ==================================================================
    column         dtype         meaning
    =============  ============  ==================================================================
    like           Int64         rating >= 4
    user_id        Int64         userId (also the group key for gAUC)
    movie_id       Int64         movieId
    genres         List[str]     movies.csv genres split on "|"; "(no genres listed)" -> []
    release_year   Int64         year in the title, "(1995)" (a series "(2007-)" gives its first
                                 year); null when the title has none
    hour           Int64         hour of day of the rating, UTC (0..23)
    weekday        Int64         weekday of the rating, UTC (1 = Monday .. 7 = Sunday)
    hist_movies    List[Int64]   the user's previous movies, oldest first, at most ``max_len``
    hist_genres    List[str]     the first genre of each movie in ``hist_movies`` (same length,
                                 same order: position i describes hist_movies[i])
    timestamp      Int64         unix seconds (the time column)
    =============  ============  ==================================================================

    History and leakage: a rating's history holds only the user's ratings with a *strictly earlier*
    timestamp. Ratings that share a second (common: about 22% of the small set's ratings share
    their (user, second) with another rating, from bulk entry on the rating pages) see none of each
    other, since their true order is unknown; they all get the same history. Within the history,
    events are ordered by (timestamp, movieId), so the order is deterministic.

    ``hist_genres`` uses the *first listed* genre of each previous movie (GroupLens lists genres
    alphabetically, so this is the alphabetically first one), giving one token per history event
    aligned with ``hist_movies``; a movie without genres (or missing from movies.csv) contributes
    the token "(no genres listed)". The full genre bag of the target movie is in ``genres``.

    With ``behaviours=True`` the frame also has the behaviour sequence ``hist`` (schema type
    ``behaviour``) in the raw behaviour layout, one string column per per-position field, values
    joined by "|", oldest first, the same strictly earlier ratings in the same order as
    ``hist_movies`` but the most recent ``behaviour_max_len``: ``hist_item`` (movieId; shares
    ``movie_id``'s table), ``hist_genre`` (first genre as in ``hist_genres``; own vocabulary,
    since the candidate's genres are a bag, not a categorical feature to share with),
    ``hist_rating`` (the earlier rating's stars, e.g. "3.5": known at request time because the
    rating is strictly earlier; own vocabulary) and ``hist_dt`` (seconds from the earlier
    rating to this one, positive; log buckets). The existing columns are unchanged.

    movies.csv must list each movieId once: a repeated one is an error naming both lines (with
    ``on_bad_row="skip"`` the first line is kept and the repeats are counted as skipped rows).
    """

    name = "movielens-latest"
    description = (
        "MovieLens latest (GroupLens) ratings with movie genres and release year; label "
        "like = rating >= 4; user histories of strictly earlier ratings; time split."
    )
    manual_instructions = (
        "Download https://files.grouplens.org/datasets/movielens/ml-latest-small.zip (or "
        "ml-latest.zip for the full set), unzip it, and point at the unpacked "
        "'ml-latest-small' folder (the one holding ratings.csv and movies.csv) or its parent. "
        "GroupLens publishes an .md5 file next to each zip. The shared test copy is the 2016 "
        "snapshot of ml-latest-small (100,004 ratings); the zip served today is a newer "
        "snapshot with the same columns."
    )

    def __init__(
        self,
        *,
        max_len: int = 20,
        min_count: int = 1,
        like_threshold: float = 4.0,
        variant: str = "small",
        behaviours: bool = False,
        behaviour_max_len: int = 50,
        session_gap: float | None = None,
        period_days: int | None = None,
    ) -> None:
        if variant not in _ZIP_DIRS:
            raise ValueError(f"variant must be one of {sorted(_ZIP_DIRS)}, got {variant!r}")
        if behaviour_max_len < 1:
            raise ValueError(f"behaviour_max_len must be at least 1, got {behaviour_max_len}")
        self.behaviours = behaviours
        self.behaviour_max_len = behaviour_max_len
        if session_gap is not None and session_gap <= 0:
            raise ValueError(f"session_gap must be positive seconds, got {session_gap}")
        self.session_gap = session_gap
        if period_days is not None and (isinstance(period_days, bool) or not isinstance(period_days, int)
                                        or period_days < 1):
            raise ValueError(f"period_days must be a whole number of days >= 1, got {period_days!r}")
        self.period_days = period_days
        self.max_len = max_len
        self.min_count = min_count
        self.like_threshold = like_threshold
        self.variant = variant
        stem = _ZIP_DIRS[variant]
        # GroupLens republishes the zips, so no fixed checksum: the .md5 it keeps beside each
        # zip is fetched with it and checked. ``download`` also unpacks the zip (see below).
        self.downloads = (
            Download(
                url=f"https://files.grouplens.org/datasets/movielens/{stem}.zip",
                filename=f"{stem}.zip",
                md5_url=f"https://files.grouplens.org/datasets/movielens/{stem}.zip.md5",
            ),
        )

    # ---- schema --------------------------------------------------------------------------
    def behaviour(self) -> BehaviourFeature:
        """The behaviour sequence ``hist`` added by ``behaviours=True``."""
        return BehaviourFeature(
            name="hist",
            max_len=self.behaviour_max_len,
            fields=[
                BehaviourField(name="item", share_with="movie_id"),
                BehaviourField(name="genre"),
                BehaviourField(name="rating"),
                BehaviourField(name="dt", bucketize=Bucketize(method="log"), order="non_increasing"),
                *session_fields(self.session_gap),
            ],
        )

    def schema(self) -> Schema:
        m = self.max_len
        behaviours = [self.behaviour()] if self.behaviours else []
        return Schema(
            name=self.name,
            source=RATINGS_SOURCE,
            labels=[LabelSpec(name="like")],
            features=[
                CategoricalFeature(name="user_id", min_count=self.min_count),
                CategoricalFeature(name="movie_id", min_count=self.min_count),
                MultiCategoricalFeature(name="genres", max_len=10),
                CategoricalFeature(name="release_year"),
                CategoricalFeature(name="hour"),
                CategoricalFeature(name="weekday"),
                SequenceFeature(name="hist_movies", max_len=m, share_with="movie_id"),
                SequenceFeature(name="hist_genres", max_len=m),
                *behaviours,
            ],
            group_key="user_id",
            time_column="timestamp",
            feature_groups={
                "user": ["user_id", "hist_movies", "hist_genres", *(b.name for b in behaviours)],
                "item": ["movie_id", "genres", "release_year"],
                "context": ["hour", "weekday"],
            },
            split=SplitSpec(method="time", ratios=(0.8, 0.1, 0.1)),
            **({"days": DaySpec(seconds=self.period_days * 86_400)} if self.period_days else {}),
        )

    # ---- files ---------------------------------------------------------------------------
    def _data_dir(self, path: Path) -> Path:
        path = Path(path)
        if path.is_file():
            if path.suffix == ".zip":
                raise FileNotFoundError(
                    f"{path} is the MovieLens zip; unpack it (or use `download`, which does) "
                    "and point at the unpacked folder or its parent"
                )
            if path.name != "ratings.csv":
                raise FileNotFoundError(
                    f"{path}: expected a MovieLens folder holding ratings.csv and movies.csv"
                )
            path = path.parent
        if not path.exists():
            raise FileNotFoundError(f"MovieLens path {path} does not exist")
        if (path / "ratings.csv").is_file():
            d = path
        else:
            order = [_ZIP_DIRS[self.variant]] + [
                v for k, v in _ZIP_DIRS.items() if k != self.variant
            ]
            found = [path / s for s in order if (path / s / "ratings.csv").is_file()]
            if not found:
                raise FileNotFoundError(
                    f"no MovieLens ratings.csv in {path} nor in {path}/ml-latest-small or "
                    f"{path}/ml-latest. {self.manual_instructions}"
                )
            d = found[0]
        if not (d / "movies.csv").is_file():
            raise FileNotFoundError(
                f"{d / 'movies.csv'} is missing: the movielens-latest preset needs movies.csv "
                "(genres, titles) next to ratings.csv"
            )
        return d

    def raw_files(self, path: Path) -> RawFiles:
        return RawFiles(all=[self._data_dir(path) / "ratings.csv"])

    def movies_path(self, path: Path) -> Path:
        return self._data_dir(path) / "movies.csv"

    def download(self, dest: Path) -> Path:
        """Fetch the zip and unpack it into ``dest`` (giving ``dest/ml-latest-small/...``)."""
        dest = Path(dest)
        super().download(dest)
        for d in self.downloads:
            target = dest / Path(d.filename).stem
            if (target / "ratings.csv").is_file():
                continue
            with zipfile.ZipFile(dest / d.filename) as zf:
                root = dest.resolve()
                for member in zf.namelist():  # refuse paths that escape dest
                    if not (dest / member).resolve().is_relative_to(root):
                        raise ValueError(f"{d.filename}: unsafe path in zip: {member}")
                zf.extractall(dest)
        return dest

    # ---- transform -----------------------------------------------------------------------
    @staticmethod
    def movie_table(movies: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
        """movies.csv (typed) -> movie_id, genres (list), release_year, first_genre."""
        genres = pl.col("genres").fill_null(NO_GENRES).str.strip_chars()
        return movies.lazy().select(
            pl.col("movieId").cast(pl.Int64).alias("movie_id"),
            pl.when(genres == NO_GENRES)
            .then(pl.lit([], dtype=pl.List(pl.String)))
            .otherwise(genres.str.split("|"))
            .alias("genres"),
            pl.col("title").str.extract(_YEAR_RE, 1).cast(pl.Int64).alias("release_year"),
            pl.when(genres == NO_GENRES)
            .then(pl.lit(NO_GENRES))
            .otherwise(genres.str.split("|").list.first())
            .alias("__first_genre"),
        )

    def side_files(self, path: Path) -> list[Path]:
        return [self.movies_path(path)]

    def transform(self, lf: pl.LazyFrame, ctx: TransformContext) -> pl.LazyFrame:
        path = self.movies_path(ctx.raw_path)
        movies = ctx.read_side_table(path, MOVIES_SOURCE)
        # One line per movieId: a repeat would duplicate that movie's ratings in the join.
        movies = unique_lookup(movies, "movieId", path, ctx.on_bad_row, ctx.report)
        return self.transform_with_movies(lf, movies)

    def transform_with_movies(
        self, lf: pl.LazyFrame, movies: pl.DataFrame | pl.LazyFrame
    ) -> pl.LazyFrame:
        """The transform proper, given the typed movies table (also used by the tests)."""
        keep = bookkeeping(lf)
        ts = pl.col("timestamp").cast(pl.Int64)
        when = pl.from_epoch(ts, time_unit="s")  # naive = UTC
        lf = lf.select(
            *keep,
            (pl.col("rating") >= self.like_threshold).cast(pl.Int64).alias("like"),
            pl.col("userId").cast(pl.Int64).alias("user_id"),
            pl.col("movieId").cast(pl.Int64).alias("movie_id"),
            ts.alias("timestamp"),
            *([pl.col("rating").cast(pl.Float64).alias("__rating")] if self.behaviours else []),
            when.dt.hour().cast(pl.Int64).alias("hour"),
            when.dt.weekday().cast(pl.Int64).alias("weekday"),
        )
        lf = lf.join(self.movie_table(movies), on="movie_id", how="left").with_columns(
            pl.col("genres").fill_null(pl.lit([], dtype=pl.List(pl.String))),
            pl.col("__first_genre").fill_null(NO_GENRES),
        )
        lf = user_history(
            lf,
            user="user_id",
            time="timestamp",
            tiebreak=("movie_id",),
            columns={"hist_movies": "movie_id", "hist_genres": "__first_genre"},
            max_len=self.max_len,
        )
        behaviour_columns = []
        if self.behaviours:
            hist = self.behaviour()
            lf = behaviour_history(
                lf,
                user="user_id",
                time="timestamp",
                tiebreak=("movie_id",),
                fields={"hist_item": "movie_id", "hist_genre": "__first_genre",
                        "hist_rating": "__rating"},
                dt="hist_dt",
                max_len=hist.max_len,
            )
            behaviour_columns = hist.columns
        return lf.sort([FILE_COL, ROW_COL]).select(
            *keep,
            "like",
            "user_id",
            "movie_id",
            "genres",
            "release_year",
            "hour",
            "weekday",
            "hist_movies",
            "hist_genres",
            *behaviour_columns,
            "timestamp",
        )

    def extras(self, path: Path) -> dict:
        return {
            "task": f"like = rating >= {self.like_threshold}",
            "history": "strictly earlier timestamps only; same-second ratings excluded",
            "hist_genres": "first listed genre of each history movie",
        }
