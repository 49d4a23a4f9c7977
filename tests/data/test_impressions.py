"""Impression logs into page histories: the builder against hand-made logs and a loop, its bad
input, the Avito reader on a hand-made sample in Avito's format, the simulator's planted
context against a loop, and the prepared page behaviour."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from rankmixer.data.datasets.impressions.avito import read_avito
from rankmixer.data.datasets.impressions.builder import build_rows
from rankmixer.data.datasets.impressions.config import ImpressionConfig
from rankmixer.data.datasets.impressions.simulate import Simulator

LOG = pl.DataFrame({
    "user": [1, 1, 1, 1, 1, 1, 1, 2, 2],
    "request": [10, 10, 11, 11, 12, 12, 12, 20, 20],
    "time": [5, 5, 9, 9, 7, 7, 7, 1, 1],  # request 12 comes before 11 (file order does not matter)
    "position": [1, 0, 0, 1, 0, 1, 2, 1, 0],
    "item": [101, 100, 102, 103, 104, 105, 106, 200, 201],
    "cat": [2, 1, 3, 4, 5, 6, 7, 7, 8],
    "click": [0, 1, 0, 0, 1, 1, 0, 0, 1],
})


def test_rows_and_histories_of_a_hand_made_log():
    rows, report = build_rows(LOG, max_pages=2, page_size=2)
    assert report == {"rows": 9, "requests": 4, "users": 2, "truncated_history_items": 1}  # item 106 of page 12
    by = {r["item"]: r for r in rows.iter_rows(named=True)}
    # user 1's pages in time order: 10 (t=5), 12 (t=7), 11 (t=9)
    assert by[100]["page_item"] is None and by[100]["click"] == 1  # the first request: no history
    assert by[104]["page_item"] == "100|101" and by[104]["page_click"] == "1|0" and by[104]["page_ago"] == "1|1"
    assert by[106]["page_item"] == "100|101"  # every exposure is a row, the third of its page too
    assert by[102]["page_item"] == "100|101|104|105" and by[102]["page_cat"] == "1|2|5|6"
    assert by[102]["page_click"] == "1|0|1|1" and by[102]["page_ago"] == "2|2|1|1"
    assert by[102]["click_item"] == "100|104|105" and by[102]["click_cat"] == "1|5|6"
    assert by[200]["page_item"] is None
    rows3, _ = build_rows(LOG, max_pages=1, page_size=3)
    by3 = {r["item"]: r for r in rows3.iter_rows(named=True)}
    assert by3[102]["page_item"] == "104|105|106" and by3[102]["page_ago"] == "1|1|1"  # only the last page


def test_histories_against_a_loop_on_a_simulated_log():
    cfg = ImpressionConfig(rows_train=600, page_size=3, max_pages=2, requests_per_user=5, n_items=60, n_categories=6)
    log = Simulator(cfg).log("train")
    rows, _ = build_rows(log.sample(fraction=1.0, shuffle=True, seed=1), cfg.max_pages, cfg.page_size)
    # each user's pages in time order: (request, [(item, click), ...] by position)
    pages: dict[int, list[tuple[int, list[tuple[int, int]]]]] = {}
    for r in log.sort("user", "time", "request", "position").iter_rows(named=True):
        timeline = pages.setdefault(r["user"], [])
        if not timeline or timeline[-1][0] != r["request"]:
            timeline.append((r["request"], []))
        timeline[-1][1].append((r["item"], r["click"]))
    checked = 0
    for r in rows.iter_rows(named=True):
        timeline = pages[r["user"]]
        k = [req for req, _ in timeline].index(r["request"])
        hist = [x for _, p in timeline[max(0, k - cfg.max_pages):k] for x in p]
        want = "|".join(str(i) for i, _ in hist) or None
        assert r["page_item"] == want
        assert r["click_item"] == ("|".join(str(i) for i, c in hist if c) or None)
        checked += 1
    assert checked == rows.height == 600


@pytest.mark.parametrize("change, message", [
    (lambda d: d.with_columns(pl.when(pl.col("item") == 105).then(None).otherwise(pl.col("click")).alias("click")),
     "missing feedback.*request 12, position 1"),
    (lambda d: d.with_columns(pl.when(pl.col("item") == 105).then(0).otherwise(pl.col("position")).alias("position")),
     "duplicate .*request 12 position 0"),
    (lambda d: d.with_columns(pl.when(pl.col("item") == 105).then(8).otherwise(pl.col("time")).alias("time")),
     "request 12 has 1 user.* and 2 time"),
    (lambda d: d.with_columns(pl.when(pl.col("item") == 105).then(2).otherwise(pl.col("click")).alias("click")),
     "click must be 0 or 1"),
    (lambda d: d.drop("cat"), r"lacks column\(s\) \['cat'\]"),
])
def test_bad_logs_are_named_errors(change, message):
    with pytest.raises(ValueError, match=message):
        build_rows(change(LOG), max_pages=2, page_size=2)


def write_avito(folder, stream_rows, search_rows=None, ads_rows=None):
    folder.mkdir(parents=True, exist_ok=True)
    search_rows = search_rows or [
        "1\t2015-05-10 18:00:00.0\t7\t55\t1\tq\t3\t4\t{}",
        "2\t2015-05-10 17:00:00.0\t7\t55\t1\tq\t3\t4\t{}",
        "3\t2015-05-11 09:30:00.0\t8\t66\t0\t\t3\t4\t",
    ]
    ads_rows = ads_rows or ["500\t1\t40\t{}\t10\tt\t1", "501\t1\t41\t{}\t12\tt\t1", "502\t1\t40\t{}\t9\tt\t1"]
    (folder / "SearchInfo.tsv").write_text(
        "SearchID\tSearchDate\tIPID\tUserID\tIsUserLoggedOn\tSearchQuery\tLocationID\tCategoryID\tSearchParams\n"
        + "\n".join(search_rows) + "\n")
    (folder / "trainSearchStream.tsv").write_text(
        "SearchID\tAdID\tPosition\tObjectType\tHistCTR\tIsClick\n" + "\n".join(stream_rows) + "\n")
    (folder / "AdsInfo.tsv").write_text(
        "AdID\tLocationID\tCategoryID\tParams\tPrice\tTitle\tIsContext\n" + "\n".join(ads_rows) + "\n")


STREAM = ["1\t500\t1\t3\t0.01\t1", "1\t501\t7\t3\t0.02\t0", "1\t900\t2\t1\t\t",
          "2\t502\t1\t3\t0.01\t0", "2\t501\t7\t3\t0.02\t1", "3\t500\t1\t3\t0.01\t0", "3\t777\t7\t3\t0.01\t0"]


def test_avito_sample_through_the_builder(tmp_path):
    write_avito(tmp_path / "avito", STREAM)
    log, report = read_avito(tmp_path / "avito")
    assert report == {"stream_rows": 7, "non_contextual_skipped": 1, "ads_without_category": 1, "impressions": 6}
    assert set(log.columns) >= {"user", "request", "time", "position", "item", "cat", "click"}
    rows, rep = build_rows(log, max_pages=5, page_size=5)
    assert rep["requests"] == 3 and rep["users"] == 2
    by = {(r["request"], r["item"]): r for r in rows.iter_rows(named=True)}
    # user 55 searched 2 (17:00) before 1 (18:00): search 1's history is search 2's page
    assert by[(1, 500)]["page_item"] == "502|501" and by[(1, 500)]["page_click"] == "0|1"
    assert by[(1, 500)]["click_item"] == "501" and by[(2, 502)]["page_item"] is None
    assert by[(3, 777)]["cat"] == -1  # not in AdsInfo.tsv: counted, category -1


def test_avito_bad_input(tmp_path):
    write_avito(tmp_path / "a", STREAM + ["9\t500\t1\t3\t0.01\t0"])
    with pytest.raises(ValueError, match="SearchID 9 is not in SearchInfo"):
        read_avito(tmp_path / "a")
    write_avito(tmp_path / "b", ["1\t500\t1\t3\t0.01\t"])
    log, _ = read_avito(tmp_path / "b")
    with pytest.raises(ValueError, match="missing feedback"):
        build_rows(log, 5, 5, where="avito")
    (tmp_path / "b" / "AdsInfo.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="AdsInfo.tsv"):
        read_avito(tmp_path / "b")


def test_simulated_context_against_a_loop():
    cfg = ImpressionConfig(page_size=4, max_pages=3, requests_per_user=6, n_items=80, n_categories=8)
    sim = Simulator(cfg)
    out = sim.simulate(np.random.default_rng(3), 40)
    I = cfg.page_size
    for u in range(40):
        for t in range(cfg.requests_per_user):
            for j in range(I):
                want = 0.0
                for k in range(1, min(cfg.max_pages, t) + 1):
                    page = t - k
                    sel = (I - out["click"][u, page].sum()) / (I - 1)
                    hits = sum(out["click"][u, page, i] and out["cat"][u, page, i] == out["cat"][u, t, j] for i in range(I))
                    want += cfg.context_decay ** (k - 1) * hits * sel
                assert out["ctx"][u, t, j] == pytest.approx(want)
    # clicks of non-noisy pages follow the planted probability, noisy pages the noise rate
    clean = ~out["noisy"]
    assert abs(out["click"][clean].mean() - out["prob"][clean].mean()) < 0.05
    assert abs(out["click"][~clean].mean() - cfg.noisy_click_rate) < 0.08


def test_bayes_probability_is_calibrated():
    cfg = ImpressionConfig(rows_train=20_000)
    log = Simulator(cfg).log("train")
    p, y = log["bayes_p"].to_numpy(), log["click"].to_numpy()
    assert abs(p.mean() - y.mean()) < 0.01
    for lo, hi in [(0.0, 0.2), (0.2, 0.4), (0.4, 1.0)]:
        m = (p >= lo) & (p < hi)
        assert abs(y[m].mean() - p[m].mean()) < 0.02
