"""Censored maximum likelihood of exponential delays: against an independently written
likelihood optimised by Nelder-Mead, against closed forms, and on planted data."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.optimize import minimize

from rankmixer.conversion.delays import DelayObservations, fit_delay, fit_delay_rates, load_rates, rates_for, save_rates


def _simulate(rng, n, p, beta, span_days=21.0):
    """Clicks uniform over the span, log ending at its end: (delays seen, elapsed of the rest)."""
    click = rng.uniform(0, span_days, n)
    elapsed = span_days - click
    converts = rng.random(n) < p
    delay = rng.exponential(1 / beta, n)
    seen = converts & (delay <= elapsed)
    return DelayObservations(delay=delay[seen], elapsed=elapsed[~seen])


def _reference_nll(x, d, e):
    p, b = 1 / (1 + math.exp(-x[0])), math.exp(x[1])
    return -(np.sum(np.log(p * b * np.exp(-b * d))) + np.sum(np.log(1 - p + p * np.exp(-b * e))))


def test_matches_scipy_nelder_mead_on_a_small_case():
    obs = _simulate(np.random.default_rng(1), 300, 0.3, 0.8, span_days=5.0)
    fit = fit_delay(obs)
    ref = minimize(_reference_nll, [0.0, 0.0], args=(obs.delay, obs.elapsed), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 5000})
    assert fit.rate_per_day == pytest.approx(math.exp(ref.x[1]), rel=1e-4)
    assert fit.p == pytest.approx(1 / (1 + math.exp(-ref.x[0])), rel=1e-4)


def test_closed_forms_without_censoring():
    """Followed for ever: p = conversions / clicks, beta = conversions / sum of delays; with the
    prior, beta = (n + k) / (sum d + k / beta_g)."""
    d = np.array([0.5, 1.0, 2.0, 0.25, 4.0])
    obs = DelayObservations(delay=d, elapsed=np.full(15, 1e6))
    fit = fit_delay(obs)
    assert fit.p == pytest.approx(5 / 20, rel=1e-5)
    assert fit.rate_per_day == pytest.approx(5 / d.sum(), rel=1e-5)
    shrunk = fit_delay(obs, prior_k=3.0, prior_rate=0.2)
    assert shrunk.rate_per_day == pytest.approx((5 + 3) / (d.sum() + 3 / 0.2), rel=1e-5)


def test_recovers_planted_rates_under_censoring():
    rng = np.random.default_rng(7)
    for beta in (0.2, 1.0, 4.0):
        fit = fit_delay(_simulate(rng, 40_000, 0.2, beta))
        assert fit.rate_per_day == pytest.approx(beta, rel=0.05)
        assert fit.p == pytest.approx(0.2, rel=0.05)
    # the naive estimate (censored clicks as negatives) is biased: the MLE is not that
    obs = _simulate(rng, 40_000, 0.2, 0.2)
    assert abs(obs.conversions / obs.clicks - 0.2) > 0.02


def _log(groups: dict[str, tuple[float, float, int]], rng) -> pl.DataFrame:
    frames = []
    for name, (p, beta, n) in groups.items():
        click = rng.integers(0, 21 * 86_400, n)
        delay = np.ceil(rng.exponential(1 / beta, n) * 86_400).astype(np.int64)
        seen = (rng.random(n) < p) & (click + delay <= 21 * 86_400)
        frames.append(pl.DataFrame({"click_ts": click, "conv_ts": np.where(seen, click + delay, 0),
                                    "observed_until": np.full(n, 21 * 86_400), "advertiser": [name] * n})
                      .with_columns(pl.when(pl.Series(seen)).then(pl.col("conv_ts")).otherwise(None)))
    return pl.concat(frames)


def test_per_advertiser_fit_shrinkage_and_files(tmp_path):
    rng = np.random.default_rng(3)
    log = _log({"fast": (0.3, 3.0, 20_000), "slow": (0.3, 0.25, 20_000), "silent": (0.0, 1.0, 50)}, rng)
    fitted = fit_delay_rates(log, prior_conversions=5.0)
    ads = fitted["advertisers"]
    assert ads["fast"]["rate_mle"] == pytest.approx(3.0, rel=0.05)
    assert ads["slow"]["rate_mle"] == pytest.approx(0.25, rel=0.05)
    # thousands of conversions: the prior barely moves them
    assert ads["fast"]["rate_per_day"] == pytest.approx(ads["fast"]["rate_mle"], rel=0.02)
    # no conversion: no MLE, the global rate
    assert ads["silent"]["rate_mle"] is None
    assert ads["silent"]["rate_per_day"] == pytest.approx(fitted["global"]["rate_per_day"], rel=0.02)
    glob = fitted["global"]["rate_per_day"]
    assert 0.25 < glob < 3.0  # one rate for a mixture: between the two
    assert rates_for(fitted, ["fast", "nobody"]).tolist() == [ads["fast"]["rate_per_day"], glob]
    assert rates_for(fitted, ["fast"], personalised=False).tolist() == [glob]
    save_rates(fitted, tmp_path / "rates.json")
    assert load_rates(tmp_path / "rates.json") == fitted
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json: not a delay-rate file"):
        load_rates(tmp_path / "bad.json")


def test_no_conversions_without_prior_is_an_error():
    with pytest.raises(ValueError, match="without a conversion"):
        fit_delay(DelayObservations(delay=np.array([]), elapsed=np.ones(10)))
