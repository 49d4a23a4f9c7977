"""The conversion log: window labels and censoring, the Criteo conversion-logs reader on a
hand-made sample (and its bad input), and the synthetic generator's planted probabilities
against Monte Carlo estimates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from rankmixer.data.datasets.base import get_preset
from rankmixer.data.datasets.conversions import ConversionsConfig, generate
from rankmixer.data.datasets.conversions.criteo import read_criteo_conversion_log
from rankmixer.data.datasets.conversions.generator import Generator
from rankmixer.data.datasets.conversions.log import ConversionLogError, window_rows, window_seconds
from rankmixer.data.reader import BadInputError

SAMPLE = Path(__file__).parent / "conversion_logs" / "criteo_sample.txt"
DAY = 86_400


def _log(rows: list[tuple[int, int | None]], end: int) -> pl.DataFrame:
    return pl.DataFrame({"click_ts": [r[0] for r in rows], "conv_ts": [r[1] for r in rows],
                         "observed_until": [end] * len(rows), "advertiser": ["a"] * len(rows)},
                        schema={"click_ts": pl.Int64, "conv_ts": pl.Int64, "observed_until": pl.Int64,
                                "advertiser": pl.Utf8})


def test_window_labels_and_censoring_by_hand():
    end, T = 10 * DAY, 2 * DAY
    log = _log([
        (0, None),               # followed 10 days, never converted: 0
        (DAY, DAY + T),          # converted exactly at the window's end: 1
        (DAY, DAY + T + 1),      # converted one second after the window: 0
        (end - T, None),         # followed exactly the window: known 0
        (end - T + 1, None),     # followed one second less: censored, dropped
        (end - 100, end - 50),   # converted, but clicked inside the last window: censored all the same
    ], end)
    kept = window_rows(log.lazy(), T).collect()
    assert kept["click_ts"].to_list() == [0, DAY, DAY, end - T]
    assert kept["conversion"].to_list() == [0, 1, 0, 0]
    # a click within T of the data's end is never a 0 label: it is not there at all
    assert (kept["click_ts"] + T <= end).all()


def test_window_seconds_rejects_non_windows():
    assert window_seconds(1.5) == 129_600
    for bad in (0, -1, float("inf"), float("nan"), True):
        with pytest.raises(ValueError, match="positive number of days"):
            window_seconds(bad)


def test_criteo_reader_on_hand_made_sample():
    df, report = read_criteo_conversion_log(SAMPLE, advertiser="C1")
    assert df.height == 5 and report.rows_read == 5 and report.rows_skipped == 0
    assert df["click_ts"].to_list() == [100, 150, 300, 900, 1200]
    assert df["conv_ts"].to_list() == [200, None, 1000, None, None]
    assert df["observed_until"].unique().to_list() == [1200]  # the latest timestamp in the file
    assert df["advertiser"].to_list() == ["adv1", "adv2", "adv1", "adv2", "(missing)"]
    assert df["I2"].to_list() == [2, None, 2, 2, 2] and df["I3"][3] is None
    assert df["C9"][3] is None and df["C2"].to_list()[:3] == ["b1", "b2", "b1"]
    assert df["__row"].to_list() == [1, 2, 3, 4, 5]
    one, _ = read_criteo_conversion_log(SAMPLE, observed_until=5000)
    assert one["advertiser"].unique().to_list() == ["all"] and one["observed_until"][0] == 5000


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.txt"
    path.write_text(text)
    return path


def _line(click: str, conv: str) -> str:
    return "\t".join([click, conv, *["1"] * 8, *["x"] * 9]) + "\n"


def test_criteo_reader_bad_input(tmp_path):
    good = _line("100", "200")
    path = _write(tmp_path, good + _line("500", "400") + good)
    with pytest.raises(ConversionLogError, match=r"line/row 2: conversion before its click"):
        read_criteo_conversion_log(path)
    df, report = read_criteo_conversion_log(path, on_bad_row="skip")
    assert df.height == 2 and report.rows_skipped == 1
    assert report.by_reason == {"conversion before its click": 1}

    path = _write(tmp_path, good + _line("", "300"))
    with pytest.raises(ConversionLogError, match=r"line/row 2: no click time"):
        read_criteo_conversion_log(path)
    with pytest.raises(ConversionLogError, match=r"line/row 1: click after the end of the log"):
        read_criteo_conversion_log(_write(tmp_path, _line("100", "")), observed_until=50)
    with pytest.raises(ConversionLogError, match=r"line/row 1: conversion after the end of the log"):
        read_criteo_conversion_log(_write(tmp_path, _line("100", "900")), observed_until=500)
    with pytest.raises(BadInputError, match=r"line 1, column 'conv_ts': expected int"):
        read_criteo_conversion_log(_write(tmp_path, _line("100", "soon")))
    with pytest.raises(ValueError, match="advertiser must name a categorical column"):
        read_criteo_conversion_log(SAMPLE, advertiser="I1")


def test_generator_planted_probabilities_match_monte_carlo():
    """The generator's rows against its planted law: the mean label of each window over the
    (uncensored) test clicks is the mean of p (1 - exp(-beta_a T)) within Monte Carlo error."""
    cfg = ConversionsConfig(rows_train=2_000, rows_valid=1_000, rows_test=60_000, seed=3)
    gen = Generator(cfg)
    batch, _, _ = gen.block("test", 0, 60_000)
    log = pl.from_arrow(batch)
    for days in (0.5, 1, 3, 7):
        kept = window_rows(log.lazy(), window_seconds(days)).collect()
        assert kept.height == log.height  # test clicks are followed eval_follow_days = 7 days
        p = kept["p_conversion"].to_numpy() * (1 - np.exp(-kept["delay_rate"].to_numpy() * days))
        y = kept["conversion"].to_numpy()
        se = np.sqrt((p * (1 - p)).sum()) / len(p)
        assert abs(y.mean() - p.mean()) < 4 * se, (days, y.mean(), p.mean())
    # the conversions' delays of one advertiser are exponential with its planted rate: every
    # test click is followed at least 7 days, so the delays up to 7 days are all seen
    conv = log.filter(pl.col("conv_ts").is_not_null())
    top = conv["advertiser"].mode()[0]
    mine = conv.filter(pl.col("advertiser") == top)
    d = (mine["conv_ts"] - mine["click_ts"]).to_numpy() / DAY
    d = d[d <= 7]
    rate = gen.rate_per_day[int(top)]
    share = (1 - np.exp(-1)) / (1 - np.exp(-rate * 7))  # P(D <= 1/rate | D <= 7)
    assert abs((d <= 1 / rate).mean() - share) < 4 * np.sqrt(share * (1 - share) / len(d))


def test_preset_prepares_one_window_without_censored_rows(tmp_path):
    preset = get_preset("conversions", rows_train=3_000, rows_valid=500, rows_test=500, window_days=5, seed=1)
    raw = tmp_path / "raw"
    files = preset.raw_files(raw)
    assert [p.name for p in files.by_split["train"]] == ["train.parquet"]
    log = pl.read_parquet(raw / "train.parquet")
    end = log["observed_until"][0]
    kept = preset.window_frame(raw, "train")
    assert kept.height == (log["click_ts"] + 5 * DAY <= end).sum() < log.height
    extras = preset.extras(raw)
    assert extras["censored"]["train"] == {"rows": 3_000, "censored": 3_000 - kept.height}
    assert extras["censored"]["test"]["censored"] == 0
    # the window is part of the schema's name, so a prepared window is never reused for another
    other = get_preset("conversions", rows_train=3_000, rows_valid=500, rows_test=500, window_days=2, seed=1)
    assert other.schema().fingerprint() != preset.schema().fingerprint()


def test_generated_meta_has_planted_rates(tmp_path):
    meta = generate({"rows_train": 1000, "rows_valid": 100, "rows_test": 100, "n_advertisers": 5}, tmp_path / "g",
                    progress=False)
    rates = meta["planted_model"]["delay_rate_per_day"]
    assert len(rates) == 5 and all(1 / 6.0 <= r <= 4.0 for r in rates)


def test_prepared_window_holds_the_uncensored_rows_with_their_labels(tmp_path):
    """Through the real preparation: the prepared training split of a 5-day window has exactly
    the clicks the log followed for 5 days, and their labels."""
    from rankmixer.data.prepare import prepare

    preset = get_preset("conversions", rows_train=3_000, rows_valid=500, rows_test=500, window_days=5, seed=2)
    raw = tmp_path / "raw"
    fm = prepare(preset.schema(), preset.raw_files(raw), tmp_path / "prepared", preset=preset, raw_path=raw,
                 log=lambda *_: None)
    kept = preset.window_frame(raw, "train")
    assert fm.splits["train"].rows == kept.height < 3_000
    assert fm.splits["test"].rows == 500  # followed 7 days: nothing censored
    train = pl.read_parquet(tmp_path / "prepared" / "train")
    assert train["conversion"].sum() == kept["conversion"].sum()
    assert fm.extras["censored"]["train"]["censored"] == 3_000 - kept.height


def test_preset_transform_names_a_bad_row(tmp_path):
    from rankmixer.data.datasets.base import TransformContext

    preset = get_preset("conversions", window_days=1)
    lf = _log([(0, 10), (100, 50)], 10 * DAY).with_columns(pl.Series("__row", [1, 2]), pl.lit(0).alias("__file"))
    ctx = TransformContext(raw_path=tmp_path / "raw", read_side_table=lambda *a: None)
    with pytest.raises(ConversionLogError, match=r"line/row 2: conversion before its click"):
        preset.transform(lf.lazy(), ctx)
    ok = preset.transform(lf.head(1).lazy(), ctx).collect()
    assert ok["conversion"].to_list() == [1] and ok["__row"].to_list() == [1]
