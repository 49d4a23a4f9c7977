"""Delay rates per advertiser by censored maximum likelihood (Chapelle 2014), shrunk toward the
global rate.

Each click of an advertiser converts eventually with probability ``p`` and, if so, after
``D ~ Exp(beta)``. A click whose conversion the log saw after ``d`` days contributes
``log(p beta e^{-beta d})``; one without a conversion, followed for ``e`` days (to the log's
end), ``log(1 - p + p e^{-beta e})``: either it never converts or it will, later than ``e``.
``p`` is one number per advertiser: click times do not depend on the features, so the rows'
differing ``p_i`` average out of the likelihood and ``beta`` is still estimated consistently.

The prior: ``k`` pseudo-conversions of an advertiser, each after the global mean delay
``1 / beta_g``, i.e. ``k log beta - k beta / beta_g`` added to the log-likelihood (a Gamma
prior with mode near ``beta_g``). An advertiser with ``n`` conversions moves from the global
rate toward its own MLE with weight about ``n / (n + k)``; one without conversions keeps
``beta_g``. Default k = 5. ``beta_g`` is the same likelihood over all clicks, without a prior (a single rate
for a mixture of rates: the global-beta ablation). ``k = 0`` gives the plain MLE.

The fit maximises over ``(logit p, log beta)`` with L-BFGS-B and the analytic gradient.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.optimize import minimize

from rankmixer.core.files import write_json
from rankmixer.data.datasets.conversions.log import ADVERTISER, CLICK, CONV, DAY_S, END

DEFAULT_PRIOR_CONVERSIONS = 5.0
FORMAT = "rankmixer-delay-rates/1"


@dataclass(frozen=True)
class DelayObservations:
    """One advertiser's clicks: ``delay`` (days) of the converted ones, ``elapsed`` (days from
    the click to the log's end) of the others."""

    delay: np.ndarray
    elapsed: np.ndarray

    @property
    def conversions(self) -> int:
        return len(self.delay)

    @property
    def clicks(self) -> int:
        return len(self.delay) + len(self.elapsed)


@dataclass(frozen=True)
class DelayFit:
    rate_per_day: float  # beta, per day
    p: float  # probability of converting eventually
    clicks: int
    conversions: int


def observations(log: pl.DataFrame) -> DelayObservations:
    """The delays and elapsed times of a conversion log's rows (all rows together)."""
    conv = log[CONV].is_not_null().to_numpy()
    click = log[CLICK].to_numpy().astype(np.float64)
    delay = (log[CONV].fill_null(0).to_numpy().astype(np.float64) - click) / DAY_S
    elapsed = (log[END].to_numpy().astype(np.float64) - click) / DAY_S
    return DelayObservations(delay=delay[conv], elapsed=elapsed[~conv])


def negative_log_likelihood(theta: np.ndarray, obs: DelayObservations, prior_k: float = 0.0,
                            prior_rate: float = 1.0) -> tuple[float, np.ndarray]:
    """Minus the (penalised) log-likelihood at ``theta = (logit p, log beta)``, and its gradient."""
    p = 1.0 / (1.0 + math.exp(-theta[0]))
    beta = math.exp(theta[1])
    n, d, e = obs.conversions, obs.delay, obs.elapsed
    # A click not seen converting: 1 - p F(e), with F(e) = 1 - e^{-beta e}.
    f = -np.expm1(-beta * e)
    stay = 1.0 - p * f
    ll = n * (math.log(p) + math.log(beta)) - beta * d.sum() + np.log(stay).sum()
    ll += prior_k * (math.log(beta) - beta / prior_rate)
    d_p = n / p - (f / stay).sum()
    d_beta = n / beta - d.sum() - (p * e * (1.0 - f) / stay).sum() + prior_k * (1.0 / beta - 1.0 / prior_rate)
    grad = np.array([d_p * p * (1.0 - p), d_beta * beta])
    return -float(ll), -grad


def fit_delay(obs: DelayObservations, prior_k: float = 0.0, prior_rate: float = 1.0) -> DelayFit:
    """The (penalised) maximum-likelihood ``(beta, p)`` of one set of clicks."""
    if obs.clicks == 0:
        raise ValueError("no clicks to fit a delay rate on")
    if obs.conversions == 0 and prior_k <= 0:
        raise ValueError(f"{obs.clicks} clicks without a conversion: the delay rate has no maximum-likelihood "
                         "value (give a prior)")
    # Start: the rate if every unconverted click never converts (observed delays only).
    rate0 = obs.conversions / max(obs.delay.sum(), 1e-9) if obs.conversions else prior_rate
    p0 = min(max(obs.conversions / obs.clicks, 1e-4), 1 - 1e-4)
    x0 = np.array([math.log(p0 / (1 - p0)), math.log(rate0)])
    res = minimize(negative_log_likelihood, x0, args=(obs, prior_k, prior_rate), jac=True, method="L-BFGS-B",
                   bounds=[(-25.0, 25.0), (-15.0, 15.0)], options={"maxiter": 500, "gtol": 1e-9, "ftol": 1e-14})
    p = 1.0 / (1.0 + math.exp(-res.x[0]))
    return DelayFit(rate_per_day=math.exp(res.x[1]), p=p, clicks=obs.clicks, conversions=obs.conversions)


def fit_delay_rates(log: pl.DataFrame, prior_conversions: float = DEFAULT_PRIOR_CONVERSIONS) -> dict:
    """Fit the global rate and each advertiser's (shrunk) rate on a conversion log; the result
    is what :func:`save_rates` writes (``global`` and ``advertisers``, each with
    ``rate_per_day``, ``p``, ``clicks``, ``conversions``; an advertiser also has ``rate_mle``,
    its unshrunk rate, or null where it has no conversion)."""
    if prior_conversions < 0:
        raise ValueError(f"prior_conversions must be >= 0, got {prior_conversions}")
    glob = fit_delay(observations(log))
    advertisers = {}
    for (name,), rows in sorted(log.group_by(ADVERTISER), key=lambda kv: str(kv[0][0])):
        obs = observations(rows)
        shrunk = fit_delay(obs, prior_conversions, glob.rate_per_day)
        mle = fit_delay(obs).rate_per_day if obs.conversions else None
        advertisers[str(name)] = {"rate_per_day": shrunk.rate_per_day, "rate_mle": mle, "p": shrunk.p,
                                  "clicks": obs.clicks, "conversions": obs.conversions}
    return {
        "format": FORMAT,
        "prior_conversions": prior_conversions,
        "global": {"rate_per_day": glob.rate_per_day, "p": glob.p, "clicks": glob.clicks, "conversions": glob.conversions},
        "advertisers": advertisers,
    }


def rates_for(fitted: dict, advertisers, personalised: bool = True) -> np.ndarray:
    """Each row's delay rate: its advertiser's (``personalised``) or the global one. An
    advertiser the fit never saw gets the global rate (the prior's limit with no data)."""
    glob = fitted["global"]["rate_per_day"]
    if not personalised:
        return np.full(len(advertisers), glob)
    table = {a: v["rate_per_day"] for a, v in fitted["advertisers"].items()}
    return np.array([table.get(str(a), glob) for a in advertisers], dtype=np.float64)


def save_rates(fitted: dict, path: str | Path) -> None:
    write_json(Path(path), fitted)


def load_rates(path: str | Path) -> dict:
    """Rates written by :func:`save_rates`; anything else is an error naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a delay-rate file ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a delay-rate file (format {FORMAT!r} expected)")
    return data
