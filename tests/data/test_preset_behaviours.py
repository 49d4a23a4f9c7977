"""The behaviour sequences of the MovieLens and Taobao presets (``behaviours=True``), checked
against a brute-force recomputation from the raw CSV files of the shared real-data samples:
strictly earlier events only, the most recent ``behaviour_max_len`` kept, oldest first, every
time gap positive and equal to the timestamp difference. The default presets have no behaviour.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import polars as pl
import pytest

from rankmixer.data.datasets.base import get_preset
from rankmixer.data.datasets.movielens import MovieLensLatestPreset
from rankmixer.data.datasets.taobao import LOG_END, LOG_START, SOURCE, TaobaoUserBehaviorPreset
from rankmixer.data.reader import FILE_COL, ROW_COL
from rankmixer.data.schema import BehaviourFeature

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
MAX_LEN = 7  # short, so many rows have longer histories and the truncation is exercised
SAMPLE_ROWS = 150


def _folder(name: str) -> Path:
    path = DATA / name
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (tests read real rows from there)")
    return path


def _numbered(df: pl.DataFrame) -> pl.DataFrame:
    """The reader's bookkeeping columns: file index 0, 1-based data row."""
    return df.with_columns(pl.lit(0, pl.Int64).alias(FILE_COL),
                           pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(ROW_COL))


def _split(s: str) -> list[str]:
    return s.split("|") if s else []


def _sample(out: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Random rows plus rows with empty and with truncated histories."""
    rng = random.Random(seed)
    rows = out.filter(pl.col(ROW_COL).is_in(rng.sample(out[ROW_COL].to_list(), SAMPLE_ROWS)))
    n = pl.col("hist_item").str.count_matches(r"\|") + 1
    return pl.concat([rows, out.filter(pl.col("hist_item") == "").head(10),
                      out.filter((pl.col("hist_item") != "") & (n < MAX_LEN)).head(10)])


def test_default_presets_have_no_behaviour():
    for preset in (MovieLensLatestPreset(), TaobaoUserBehaviorPreset()):
        schema = preset.schema()
        assert not [f for f in schema.features if isinstance(f, BehaviourFeature)]
        assert not [c for c in schema.canonical_columns() if c.startswith("hist_") and c[5:] in
                    ("item", "genre", "rating", "cat", "type", "dt")]


def test_behaviour_schema_and_options():
    hist = get_preset("movielens-latest", behaviours=True).schema().feature("hist")
    assert isinstance(hist, BehaviourFeature) and hist.max_len == 50
    assert [(b.name, b.share_with, b.bucketize is not None) for b in hist.fields] == [
        ("item", "movie_id", False), ("genre", None, False), ("rating", None, False), ("dt", None, True)]
    hist = get_preset("taobao-userbehavior", behaviours=True, behaviour_max_len=9).schema().feature("hist")
    assert hist.max_len == 9 and hist.columns == ["hist_item", "hist_cat", "hist_type", "hist_dt"]
    assert [b.share_with for b in hist.fields] == ["item_id", "category_id", None, None]
    with pytest.raises(ValueError, match="behaviour_max_len"):
        TaobaoUserBehaviorPreset(behaviour_max_len=0)


# ---- MovieLens ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def movielens():
    folder = _folder("movielens-latest-small")
    preset = MovieLensLatestPreset(behaviours=True, behaviour_max_len=MAX_LEN)
    ratings = _numbered(pl.read_csv(folder / "ratings.csv"))
    out = preset.transform_with_movies(ratings.lazy(), pl.read_csv(folder / "movies.csv")).collect()
    return folder, preset, out


def test_movielens_behaviours_match_the_raw_files(movielens):
    folder, preset, out = movielens
    with open(folder / "movies.csv", newline="") as f:
        first_genre = {int(r["movieId"]): r["genres"].split("|")[0] for r in csv.DictReader(f)}
    by_user: dict[int, list[tuple[int, int, float]]] = {}
    with open(folder / "ratings.csv", newline="") as f:
        for r in csv.DictReader(f):
            by_user.setdefault(int(r["userId"]), []).append(
                (int(r["timestamp"]), int(r["movieId"]), float(r["rating"])))
    for events in by_user.values():
        events.sort()  # (timestamp, movieId): the preset's order
    assert out.height == sum(len(v) for v in by_user.values())
    rows = _sample(out, 0)
    assert rows.height > SAMPLE_ROWS
    for r in rows.iter_rows(named=True):
        t0 = r["timestamp"]
        earlier = [e for e in by_user[r["user_id"]] if e[0] < t0][-MAX_LEN:]
        assert [int(v) for v in _split(r["hist_item"])] == [m for _, m, _ in earlier], r[ROW_COL]
        assert _split(r["hist_genre"]) == [first_genre[m] for _, m, _ in earlier], r[ROW_COL]
        assert [float(v) for v in _split(r["hist_rating"])] == [x for _, _, x in earlier], r[ROW_COL]
        dts = [int(v) for v in _split(r["hist_dt"])]
        assert dts == [t0 - t for t, _, _ in earlier] and all(d > 0 for d in dts), r[ROW_COL]
    # the existing history is untouched by the option
    assert out["hist_movies"].list.len().max() == preset.max_len


# ---- Taobao ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def taobao():
    folder = _folder("taobao-userbehavior-sample")
    preset = TaobaoUserBehaviorPreset(behaviours=True, behaviour_max_len=MAX_LEN)
    names = [c.name for c in SOURCE.columns]
    events = _numbered(pl.read_csv(folder / "UserBehavior.csv", has_header=False, new_columns=names))
    out = preset.transform(events.lazy(), None).collect()
    return folder, preset, out


def test_taobao_behaviours_match_the_raw_file(taobao):
    folder, preset, out = taobao
    by_user: dict[int, list[tuple[int, int, int, int, str]]] = {}
    with open(folder / "UserBehavior.csv", newline="") as f:
        for line, (u, i, c, b, t) in enumerate(csv.reader(f), start=1):
            if LOG_START <= int(t) < LOG_END:  # out-of-window events are dropped by default
                by_user.setdefault(int(u), []).append((int(t), line, int(i), int(c), b))
    for events in by_user.values():
        events.sort()  # (timestamp, file line): the preset's order
    default = TaobaoUserBehaviorPreset().transform(
        _numbered(pl.read_csv(folder / "UserBehavior.csv", has_header=False,
                              new_columns=[c.name for c in SOURCE.columns])).lazy(), None).collect()
    assert out.select(default.columns).equals(default)  # same examples, labels and histories
    rows = _sample(out, 1)
    types = set()
    for r in rows.iter_rows(named=True):
        t0 = r["timestamp"]
        earlier = [e for e in by_user[r["user_id"]] if e[0] < t0][-MAX_LEN:]
        assert [int(v) for v in _split(r["hist_item"])] == [e[2] for e in earlier], r[ROW_COL]
        assert [int(v) for v in _split(r["hist_cat"])] == [e[3] for e in earlier], r[ROW_COL]
        assert _split(r["hist_type"]) == [e[4] for e in earlier], r[ROW_COL]
        dts = [int(v) for v in _split(r["hist_dt"])]
        assert dts == [t0 - e[0] for e in earlier] and all(d > 0 for d in dts), r[ROW_COL]
        types.update(e[4] for e in earlier)
    assert types == {"pv", "cart", "fav", "buy"}  # histories hold every behaviour type


# ---- prepared ----------------------------------------------------------------------------
def test_prepared_movielens_behaviour(tmp_path):
    """The real reader and preparation: the behaviour reaches the feature map and the batches."""
    from rankmixer.data.loader import ParquetBatches, make_loader
    from rankmixer.data.prepare import prepare

    path = _folder("movielens-latest-small")
    preset = get_preset("movielens-latest", behaviours=True, behaviour_max_len=MAX_LEN)
    fm = prepare(preset.schema(), preset.raw_files(path), tmp_path / "prep", preset=preset, raw_path=path,
                 log=lambda _: None)
    (info,) = fm.behaviours
    assert info.name == "hist" and info.kind == "behaviour" and info.max_len == MAX_LEN
    assert [(b.name, b.share_with) for b in info.fields] == [
        ("item", "movie_id"), ("genre", None), ("rating", None), ("dt", None)]
    batch = next(iter(make_loader(ParquetBatches(fm, "test", 256, shuffle=False))))
    ids = batch.behaviours["hist"]
    assert ids.shape == (256, MAX_LEN, 4)
    real = ids[:, :, 0] != 0
    assert (real.sum(1) == MAX_LEN).float().mean() > 0.9  # test rows are late: long histories
    assert ((ids != 0) == real.unsqueeze(-1)).all()  # every field present at every real position
