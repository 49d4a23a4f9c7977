"""Dataset presets (MovieLens, Taobao, Criteo, Avazu) on the shared real-data samples.

The typed input frame is built by ``_typed_frame``, a small stand-in for
``rankmixer.data.reader``: raw columns cast to the schema's declared types (empty field ->
null), plus ``__file`` (index into the file list) and ``__row`` (1-based data row).
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from rankmixer.data.datasets.avazu import AvazuPreset, has_header_line
from rankmixer.data.datasets.base import (
    RawFiles,
    TransformContext,
    available_presets,
    get_preset,
)
from rankmixer.data.datasets.criteo import CriteoPreset
from rankmixer.data.datasets.movielens import MOVIES_SOURCE, MovieLensLatestPreset
from rankmixer.data.datasets.taobao import LOG_END, LOG_START, TaobaoUserBehaviorPreset
from rankmixer.data.reader import FILE_COL, ROW_COL
from rankmixer.data.schema import (
    CategoricalFeature,
    MultiCategoricalFeature,
    NumericalFeature,
    Schema,
    SequenceFeature,
    SourceSpec,
    dump_schema,
    load_schema,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
SAMPLE_ROWS = 300

_PL_TYPES = {"int": pl.Int64, "float": pl.Float64, "str": pl.String}


def _folder(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (tests read real rows from there)")
    return path


def _typed_frame(paths, source) -> pl.DataFrame:
    """Mimic the reader: ``source`` is a SourceSpec or a callable path -> SourceSpec."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for i, path in enumerate(paths):
        spec: SourceSpec = source(path) if callable(source) else source
        names = [c.name for c in spec.columns]
        if spec.has_header:
            df = pl.read_csv(path, separator=spec.sep, has_header=True, infer_schema=False)
            df = df.select(names)
        else:
            df = pl.read_csv(
                path, separator=spec.sep, has_header=False, new_columns=names, infer_schema=False
            )
            assert df.width == len(names), f"{path}: {df.width} fields, expected {len(names)}"
        df = df.with_columns(
            pl.when(pl.col(c).str.len_bytes() == 0).then(None).otherwise(pl.col(c)).alias(c)
            for c in names
        )
        df = df.with_columns(
            pl.col(c.name).cast(_PL_TYPES[c.type], strict=True) for c in spec.columns
        )
        for c in spec.columns:
            if c.required:
                assert df[c.name].null_count() == 0, f"{path}: empty required {c.name}"
        frames.append(
            df.with_columns(
                pl.lit(i, pl.Int64).alias(FILE_COL),
                pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW_COL),
            )
        )
    return pl.concat(frames)


def _ctx(raw_path: Path) -> TransformContext:
    return TransformContext(
        raw_path=raw_path, read_side_table=lambda p, spec: _typed_frame(p, spec)
    )


def _check_schema(schema: Schema, tmp_path: Path) -> None:
    assert Schema.model_validate(schema.model_dump()) == schema
    dump_schema(schema, tmp_path / "schema.yaml")
    assert load_schema(tmp_path / "schema.yaml").fingerprint() == schema.fingerprint()


def _check_canonical(schema: Schema, df: pl.DataFrame) -> None:
    """Every canonical column exists with an allowed dtype; labels are 0/1."""
    missing = [c for c in schema.canonical_columns() if c not in df.columns]
    assert not missing, f"canonical columns missing: {missing}"
    assert FILE_COL in df.columns and ROW_COL in df.columns
    assert df.select(FILE_COL, ROW_COL).is_duplicated().sum() == 0
    for lab in schema.labels:
        col = df[lab.name]
        assert col.dtype.is_integer(), (lab.name, col.dtype)
        assert col.null_count() == 0
        assert set(col.unique().to_list()) <= {0, 1}, lab.name
    for f in schema.features:
        dtype = df.schema[f.column]
        if isinstance(f, CategoricalFeature):
            assert dtype in (pl.Int64, pl.String), (f.name, dtype)
        elif isinstance(f, NumericalFeature):
            assert dtype == pl.Float64, (f.name, dtype)
        elif isinstance(f, (MultiCategoricalFeature, SequenceFeature)):
            assert dtype == pl.String or (
                isinstance(dtype, pl.List) and dtype.inner in (pl.Int64, pl.String)
            ), (f.name, dtype)
            if isinstance(f, SequenceFeature) and isinstance(dtype, pl.List):
                assert df[f.column].list.len().max() <= f.max_len
    if schema.time_column:
        assert df.schema[schema.time_column] == pl.Int64
        assert df[schema.time_column].null_count() == 0
    if schema.group_key:
        assert df[schema.group_key].null_count() == 0


def test_registry_lists_the_presets():
    names = available_presets()
    for n in ("movielens-latest", "taobao-userbehavior", "criteo", "avazu"):
        assert n in names
        assert get_preset(n).name == n


# ---- MovieLens ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def movielens():
    folder = _folder("movielens-latest-small")
    preset = MovieLensLatestPreset()
    raw = preset.raw_files(folder)
    ratings = _typed_frame(raw.all, preset.schema().source)
    out = preset.transform(ratings.lazy(), _ctx(folder)).collect()
    return folder, preset, ratings, out


def test_movielens_canonical(movielens, tmp_path):
    folder, preset, ratings, out = movielens
    schema = preset.schema()
    _check_schema(schema, tmp_path)
    assert schema.split.method == "time" and schema.group_key == "user_id"
    _check_canonical(schema, out)
    assert out.height == ratings.height == 100_004
    assert out[ROW_COL].to_list() == list(range(1, 100_005))  # file order kept
    like = out["like"].mean()
    assert 0.50 < like < 0.53, like  # 51.6% of the 2016 small set's ratings are >= 4
    assert out.schema["genres"] == pl.List(pl.String)
    assert out.schema["hist_movies"] == pl.List(pl.Int64)
    assert out.schema["hist_genres"] == pl.List(pl.String)
    assert (out["hist_movies"].list.len() == out["hist_genres"].list.len()).all()
    assert out["hour"].is_between(0, 23).all() and out["weekday"].is_between(1, 7).all()


def test_movielens_item_side_features(movielens):
    folder, preset, ratings, out = movielens
    movies = _typed_frame(folder / "movies.csv", MOVIES_SOURCE)
    table = MovieLensLatestPreset.movie_table(movies).collect()
    by_id = {r["movie_id"]: r for r in table.iter_rows(named=True)}
    assert by_id[1]["release_year"] == 1995
    assert by_id[1]["genres"] == ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]
    assert by_id[108583]["release_year"] == 1975  # "Fawlty Towers (1975-1979)"
    assert by_id[143410]["release_year"] is None  # "Hyena Road": no year
    assert by_id[143410]["genres"] == []  # "(no genres listed)"
    row = out.filter(pl.col("movie_id") == 1).row(0, named=True)
    assert row["genres"] == by_id[1]["genres"] and row["release_year"] == 1995
    r = out.row(0, named=True)
    when = dt.datetime.fromtimestamp(r["timestamp"], tz=dt.timezone.utc)
    assert (r["hour"], r["weekday"]) == (when.hour, when.isoweekday())


def test_movielens_history_has_no_leakage(movielens):
    folder, preset, ratings, out = movielens
    movies = pl.read_csv(folder / "movies.csv")
    first_genre = {
        m: ("(no genres listed)" if g == "(no genres listed)" else g.split("|")[0])
        for m, g in zip(movies["movieId"], movies["genres"])
    }
    by_user: dict[int, list[tuple[int, int]]] = {}
    for u, m, t in ratings.select("userId", "movieId", "timestamp").iter_rows():
        by_user.setdefault(u, []).append((t, m))
    for events in by_user.values():
        events.sort()
    rng = random.Random(0)
    rows = out.filter(pl.col(ROW_COL).is_in(rng.sample(range(1, out.height + 1), SAMPLE_ROWS)))
    for r in rows.iter_rows(named=True):
        events = by_user[r["user_id"]]
        earlier = [(t, m) for t, m in events if t < r["timestamp"]][-preset.max_len :]
        assert r["hist_movies"] == [m for _, m in earlier], r[ROW_COL]
        assert r["hist_genres"] == [first_genre[m] for _, m in earlier], r[ROW_COL]
        # and explicitly: nothing in the history is at or after this rating
        when = {m: t for t, m in events}
        assert all(when[m] < r["timestamp"] for m in r["hist_movies"])
        assert r["movie_id"] not in r["hist_movies"]


def test_movielens_raw_files(tmp_path):
    folder = _folder("movielens-latest-small")
    preset = MovieLensLatestPreset()
    assert preset.raw_files(folder).all == [folder / "ratings.csv"]
    (tmp_path / "ml-latest-small").symlink_to(folder)  # the unpacked zip's parent dir
    assert preset.raw_files(tmp_path).all == [tmp_path / "ml-latest-small" / "ratings.csv"]
    lonely = tmp_path / "only-ratings"
    lonely.mkdir()
    (lonely / "ratings.csv").symlink_to(folder / "ratings.csv")
    with pytest.raises(FileNotFoundError, match="movies.csv"):
        preset.raw_files(lonely)
    with pytest.raises(FileNotFoundError, match="ratings.csv"):
        preset.raw_files(_empty_dir(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        preset.raw_files(tmp_path / "nope")
    d = preset.downloads[0]
    assert d.url == "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"
    assert d.md5_url == d.url + ".md5"


def test_movielens_download_unpacks_the_zip(tmp_path, monkeypatch):
    """``download`` (network stubbed) leaves an unpacked folder that raw_files accepts."""
    import zipfile

    from rankmixer.data.datasets import base

    folder = _folder("movielens-latest-small")

    def fake_fetch(d, dest):
        with zipfile.ZipFile(dest / d.filename, "w") as zf:
            for name in ("ratings.csv", "movies.csv"):
                zf.write(folder / name, f"ml-latest-small/{name}")
        return dest / d.filename

    monkeypatch.setattr(base, "fetch", fake_fetch)
    preset = MovieLensLatestPreset()
    dest = preset.download(tmp_path / "dl")
    assert preset.raw_files(dest).all == [dest / "ml-latest-small" / "ratings.csv"]
    with pytest.raises(FileNotFoundError, match="unpack"):
        preset.raw_files(dest / "ml-latest-small.zip")


def _empty_dir(tmp_path: Path) -> Path:
    p = tmp_path / "empty"
    p.mkdir()
    return p


# ---- Taobao ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def taobao():
    folder = _folder("taobao-userbehavior-sample")
    preset = TaobaoUserBehaviorPreset()
    raw = preset.raw_files(folder)
    events = _typed_frame(raw.all, preset.schema().source)
    out = preset.transform(events.lazy(), _ctx(folder)).collect()
    return folder, preset, events, out


def test_taobao_canonical(taobao, tmp_path):
    folder, preset, events, out = taobao
    schema = preset.schema()
    _check_schema(schema, tmp_path)
    _check_canonical(schema, out)
    assert [lab.name for lab in schema.labels] == ["buy", "cart", "fav"]
    assert out.schema["hist_items"] == pl.List(pl.Int64)
    assert out.schema["hist_cats"] == pl.List(pl.Int64)
    assert events.height == 84_475
    assert out.height == 65_674  # pv events in the window, minus the censored last day
    rates = out.select(pl.col("buy", "cart", "fav").mean()).row(0, named=True)
    # Not degenerate: ~2.2% buy, ~1.1% cart, ~0.3% fav with the default one-day horizon.
    assert 0.01 < rates["buy"] < 0.05, rates
    assert 0.005 < rates["cart"] < 0.03, rates
    assert 0.001 < rates["fav"] < 0.01, rates
    assert out["timestamp"].is_between(LOG_START, LOG_END, closed="left").all()
    log_end = events.filter(pl.col("timestamp").is_between(LOG_START, LOG_END, closed="left"))[
        "timestamp"
    ].max()
    assert out["timestamp"].max() <= log_end - preset.horizon_s  # no censored example
    assert out[ROW_COL].is_sorted()
    assert out["hour"].is_between(0, 23).all() and out["weekday"].is_between(1, 7).all()


def test_taobao_labels_and_history_brute_force(taobao):
    folder, preset, events, out = taobao
    ok = events.filter(pl.col("timestamp").is_between(LOG_START, LOG_END, closed="left"))
    by_pair: dict[tuple[int, int], list[tuple[int, str]]] = {}
    pv_by_user: dict[int, list[tuple[int, int, int, int]]] = {}
    for u, i, c, b, t, row in ok.select(
        "user_id", "item_id", "category_id", "behavior_type", "timestamp", ROW_COL
    ).iter_rows():
        by_pair.setdefault((u, i), []).append((t, b))
        if b == "pv":
            pv_by_user.setdefault(u, []).append((t, row, i, c))
    for v in pv_by_user.values():
        v.sort()
    rows = out.sample(SAMPLE_ROWS, seed=1) if out.height > SAMPLE_ROWS else out
    # make sure some positives are checked too
    rows = pl.concat([rows, out.filter(pl.col("buy") == 1).head(50)])
    for r in rows.iter_rows(named=True):
        t0 = r["timestamp"]
        for target in ("buy", "cart", "fav"):
            want = any(
                b == target and t0 <= t <= t0 + preset.horizon_s
                for t, b in by_pair[(r["user_id"], r["item_id"])]
            )
            assert r[target] == int(want), (r[ROW_COL], target)
        earlier = [e for e in pv_by_user[r["user_id"]] if e[0] < t0][-preset.max_len :]
        assert r["hist_items"] == [e[2] for e in earlier], r[ROW_COL]
        assert r["hist_cats"] == [e[3] for e in earlier], r[ROW_COL]


def test_taobao_options_and_extras(taobao):
    folder, preset, events, out = taobao
    full = TaobaoUserBehaviorPreset(horizon_s=None).transform(events.lazy(), _ctx(folder))
    full = full.collect()
    assert full.height == 75_837  # every pv inside the window
    keep_bad = TaobaoUserBehaviorPreset(horizon_s=None, drop_bad_timestamps=False)
    assert keep_bad.transform(events.lazy(), _ctx(folder)).collect().height == 75_872
    ex = preset.extras(folder)
    assert ex["raw_rows"] == 84_475 and ex["bad_timestamp_rows"] == 35
    assert ex["censored_pv_dropped"] == full.height - out.height
    with pytest.raises(FileNotFoundError, match="tianchi"):
        preset.raw_files(_folder("criteo-sample"))


# ---- Criteo ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def criteo():
    folder = _folder("criteo-sample")
    preset = CriteoPreset(min_count=1, split="files")
    raw = preset.raw_files(folder)
    outs = {
        split: preset.transform(
            _typed_frame(paths, preset.schema().source).lazy(), _ctx(folder)
        ).collect()
        for split, paths in raw.by_split.items()
    }
    return folder, preset, raw, outs


def test_criteo_canonical(criteo, tmp_path):
    folder, preset, raw, outs = criteo
    schema = preset.schema()
    _check_schema(schema, tmp_path)
    assert raw.by_split == {
        "train": [folder / "train.tsv"],
        "valid": [folder / "dev.tsv"],
        "test": [folder / "test.tsv"],
    }
    assert {k: v.height for k, v in outs.items()} == {"train": 7200, "valid": 409, "test": 391}
    for out in outs.values():
        _check_canonical(schema, out)
    train = outs["train"]
    assert all(train.schema[f"I{i}"] == pl.Float64 for i in range(1, 14))
    assert all(train.schema[f"C{i}"] == pl.String for i in range(1, 27))
    assert train["I12"].null_count() > 0  # empty counts stay missing (-> OOV bucket)
    assert train["I2"].min() < 0  # negative counts are kept
    assert train["C22"].null_count() > 0
    assert train["C1"].drop_nulls().str.contains(r"^[0-9a-f]{8}$").all()
    rate = train["label"].mean()
    assert 0.15 < rate < 0.35, rate
    f = schema.feature("I1")
    assert f.bucketize is not None and f.bucketize.method == "log"
    assert schema.feature("C1").min_count == 1
    assert CriteoPreset().schema().feature("C1").min_count == 10
    assert CriteoPreset(hash_buckets=1000).schema().feature("C5").hash_buckets == 1000
    assert set(schema.feature_groups) == {"dense", "categorical"}


def test_criteo_raw_files(tmp_path):
    folder = _folder("criteo-sample")
    preset = CriteoPreset()
    assert preset.raw_files(folder / "train.tsv") == RawFiles(all=[folder / "train.tsv"])
    one = tmp_path / "kaggle"
    one.mkdir()
    (one / "train.txt").symlink_to(folder / "train.tsv")
    assert preset.raw_files(one) == RawFiles(all=[one / "train.txt"])
    (one / "test.txt").symlink_to(folder / "test.tsv")  # train + test, no valid: ambiguous
    with pytest.raises(FileNotFoundError, match="valid"):
        preset.raw_files(one)
    days = tmp_path / "tb"
    days.mkdir()
    for n in (10, 2, 0):
        (days / f"day_{n}").symlink_to(folder / "dev.tsv")
    assert [p.name for p in preset.raw_files(days).all] == ["day_0", "day_2", "day_10"]
    with pytest.raises(FileNotFoundError, match="Kaggle"):
        preset.raw_files(_empty_dir(tmp_path))
    with pytest.raises(FileNotFoundError, match="split='files'"):
        CriteoPreset(split="files").raw_files(folder / "train.tsv")
    assert CriteoPreset().schema().split.method == "ratio"


# ---- Avazu -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def avazu():
    folder = _folder("avazu-sample")
    preset = AvazuPreset(min_count=1, split="files")
    raw = preset.raw_files(folder)
    source = preset.schema().source  # headerless, all strings: a header arrives as a row
    outs = {
        split: preset.transform(_typed_frame(paths, source).lazy(), _ctx(folder)).collect()
        for split, paths in raw.by_split.items()
    }
    return folder, preset, raw, outs


def test_avazu_canonical(avazu, tmp_path):
    folder, preset, raw, outs = avazu
    schema = preset.schema()
    _check_schema(schema, tmp_path)
    assert schema.split.method == "files"
    assert raw.by_split == {
        "train": [folder / "train.csv"],
        "valid": [folder / "dev.csv"],
        "test": [folder / "test.csv"],
    }
    assert {k: v.height for k, v in outs.items()} == {"train": 8087, "valid": 480, "test": 432}
    for out in outs.values():
        _check_canonical(schema, out)
        assert "id" not in out.columns
    train = outs["train"]
    r = train.row(0, named=True)  # hour 14102100 = 2014-10-21 00:00 UTC, a Tuesday
    assert (r["hour"], r["weekday"], r["timestamp"]) == (0, 2, 1413849600)
    assert r[ROW_COL] == 2  # the header was row 1 and is gone
    assert train.schema["site_id"] == pl.String and train.schema["C14"] == pl.String
    rate = train["click"].mean()
    assert 0.1 < rate < 0.3, rate
    assert schema.group_key == "device_id"
    assert set(schema.feature_groups) == {"site", "app", "device", "context"}
    grouped = sorted(m for ms in schema.feature_groups.values() for m in ms)
    assert grouped == sorted(f.name for f in schema.features)
    assert AvazuPreset(split="time").schema().split.method == "time"
    assert AvazuPreset().schema().feature("site_id").min_count == 2


def test_avazu_typed_per_file_source_gives_the_same_frame(avazu):
    """A reader using source_for (header detected per file, typed ints) gets the same rows."""
    folder, preset, raw, outs = avazu
    assert [has_header_line(folder / f) for f in ("train.csv", "dev.csv", "test.csv")] == [
        True,
        False,
        False,
    ]
    for split, paths in raw.by_split.items():
        typed = _typed_frame(paths, preset.source_for)
        assert typed.schema["click"] == pl.Int64 and typed.schema["C14"] == pl.Int64
        out = preset.transform(typed.lazy(), _ctx(folder)).collect()
        assert out.drop(ROW_COL).equals(outs[split].drop(ROW_COL)), split


def test_avazu_raw_files(tmp_path):
    folder = _folder("avazu-sample")
    preset = AvazuPreset()
    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    (kaggle / "train.csv").symlink_to(folder / "train.csv")
    header = (folder / "train.csv").open().readline().replace("click,", "")
    (kaggle / "test.csv").write_text(header + "1,14103100,1005\n")  # unlabeled Kaggle test
    assert preset.raw_files(kaggle) == RawFiles(all=[kaggle / "train.csv"])
    with pytest.raises(FileNotFoundError, match="split='files'"):
        AvazuPreset(split="files").raw_files(kaggle)
    swapped = tmp_path / "swapped.csv"
    swapped.write_text("id,click,C1,hour\n1,0,1005,14102100\n")
    with pytest.raises(ValueError, match="differs from the Avazu layout"):
        preset.raw_files(swapped)
    with pytest.raises(FileNotFoundError, match="Kaggle"):
        preset.raw_files(_empty_dir(tmp_path))


# ---- all presets -------------------------------------------------------------------------
def test_transforms_keep_bookkeeping_columns():
    """Preparation adds ``__split`` for pre-split raw files; every transform carries it."""
    folder = _folder("criteo-sample")
    preset = CriteoPreset(min_count=1)
    typed = _typed_frame(folder / "dev.tsv", preset.schema().source)
    out = preset.transform(typed.with_columns(__split=pl.lit("valid")).lazy(), _ctx(folder))
    out = out.collect()
    assert out["__split"].to_list() == ["valid"] * typed.height
    folder = _folder("taobao-userbehavior-sample")
    tb = TaobaoUserBehaviorPreset()
    typed = _typed_frame(tb.raw_files(folder).all, tb.schema().source).head(3000)
    out = tb.transform(typed.with_columns(__split=pl.lit("train")).lazy(), _ctx(folder))
    assert out.collect()["__split"].unique().to_list() == ["train"]


_E2E = [
    ("movielens-latest", {}, "movielens-latest-small"),
    ("taobao-userbehavior", {}, "taobao-userbehavior-sample"),
    ("criteo", {"min_count": 1, "split": "files"}, "criteo-sample"),
    ("avazu", {"min_count": 1, "split": "files"}, "avazu-sample"),
]


@pytest.mark.parametrize("name,options,folder", _E2E, ids=[c[0] for c in _E2E])
def test_prepare_end_to_end(name, options, folder, tmp_path):
    """The real reader + preparation on each preset (skipped while they do not exist)."""
    prepare = pytest.importorskip("rankmixer.data.prepare").prepare
    path = _folder(folder)
    preset = get_preset(name, **options)
    raw = preset.raw_files(path)
    out = tmp_path / name
    fm = prepare(preset.schema(), raw, out, preset=preset, raw_path=path, log=lambda _: None)
    assert set(fm.splits) == {"train", "valid", "test"}
    for split in fm.splits.values():
        assert split.rows > 0
        assert all(0.0 < m < 1.0 for m in split.label_means), (name, split.label_means)
    by_name = {f.name: f for f in fm.features}
    assert set(by_name) == {f.name for f in preset.schema().features}
    if name == "movielens-latest":
        assert by_name["hist_movies"].kind == "sequence"
        assert by_name["hist_movies"].share_with == "movie_id"
        assert by_name["genres"].kind == "bag"
    if name == "taobao-userbehavior":
        assert fm.extras["bad_timestamp_rows"] == 35


def test_movielens_periods_partition_the_training_split(tmp_path):
    """``period_days``: the training split one folder per period of that many days since the
    epoch, checked against the ratings file's own timestamps (the split's rows are the earliest
    80% by time, so each period holds exactly the training timestamps that fall in it)."""
    from rankmixer.data.prepare import prepare

    path = _folder("movielens-latest-small")
    period = 1461 * 86_400
    preset = get_preset("movielens-latest", period_days=1461)
    fm = prepare(preset.schema(), preset.raw_files(path), tmp_path / "p", preset=preset, raw_path=path,
                 log=lambda _: None)
    train = pl.concat([pl.read_parquet(fm.day_files(d.day)) for d in fm.days])
    assert train.height == fm.splits["train"].rows == sum(d.rows for d in fm.days)
    ts = np.sort(pl.read_csv(path / "ratings.csv")["timestamp"].to_numpy())
    cut = train["__ts"].max()
    want = np.unique(ts[ts <= cut] // period, return_counts=True)
    assert [d.day for d in fm.days] == want[0].tolist() and len(fm.days) >= 4
    assert [d.rows for d in fm.days] == want[1].tolist()
    for d in fm.days:
        assert (pl.read_parquet(fm.day_files(d.day))["__ts"] // period == d.day).all()
    with pytest.raises(ValueError, match="period_days"):
        get_preset("movielens-latest", period_days=0)
