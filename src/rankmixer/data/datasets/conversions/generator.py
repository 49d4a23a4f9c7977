"""The planted conversion model and the click log it writes (formula in
:class:`.config.ConversionsConfig`).

Every random number comes from a named stream (:func:`..synthetic.sampling.seeded_rng`): the
parameters, the calibration sample and each block of each split. Delays are drawn for every row
(converted or not), so a block's streams never depend on its outcomes; a conversion time is the
click time plus the delay rounded *up* to a whole second, so "converted within ``T`` seconds" has
exactly the planted probability ``p (1 - exp(-beta T))`` for whole-second windows.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rankmixer.data.datasets.calibration import sigmoid, solve_bias
from rankmixer.data.datasets.conversions.columns import arrow_schema
from rankmixer.data.datasets.conversions.config import CALIBRATION_ROWS, ConversionsConfig
from rankmixer.data.datasets.conversions.log import DAY_S
from rankmixer.data.datasets.synthetic.sampling import CALIB_KEY, PARAM_KEY, SPLIT_KEY, ZipfSampler, seeded_rng


def true_window_probability(p: np.ndarray, rate_per_day: np.ndarray, window_days: float | np.ndarray) -> np.ndarray:
    """The planted probability of a conversion within ``window_days``: ``p (1 - exp(-beta T))``."""
    return p * -np.expm1(-rate_per_day * window_days)


class Generator:
    def __init__(self, cfg: ConversionsConfig):
        self.cfg = cfg
        rng = seeded_rng(cfg.seed, PARAM_KEY)
        k = cfg.latent_dim
        self.samplers = {n: ZipfSampler(v, cfg.zipf_exponent)
                         for n, v in (("user", cfg.n_users), ("item", cfg.n_items), ("advertiser", cfg.n_advertisers))}
        self.perm = {n: rng.permutation(v) for n, v in
                     (("user", cfg.n_users), ("item", cfg.n_items), ("advertiser", cfg.n_advertisers))}
        self.first = {n: rng.standard_normal(v) for n, v in
                      (("user", cfg.n_users), ("advertiser", cfg.n_advertisers), ("item", cfg.n_items),
                       ("context", cfg.n_contexts))}
        self.latent_user = rng.standard_normal((cfg.n_users, k)) / math.sqrt(k)
        self.latent_item = rng.standard_normal((cfg.n_items, k)) / math.sqrt(k)
        self.dense_w = rng.standard_normal(cfg.n_dense)
        lo, hi = math.log(cfg.mean_delay_days_min), math.log(cfg.mean_delay_days_max)
        #: the planted delay rate of each advertiser, per day (mean delay 1 / rate days)
        self.rate_per_day = np.exp(-rng.uniform(lo, hi, cfg.n_advertisers))
        self.loc, self.scale = np.zeros(3), np.ones(3)
        calib = self.sample(seeded_rng(cfg.seed, CALIB_KEY), CALIBRATION_ROWS)
        parts = self._parts(calib)
        self.loc, self.scale = parts.mean(axis=1), np.where(parts.std(axis=1) > 0, parts.std(axis=1), 1.0)
        self.bias = solve_bias(self._logit_unbiased(calib), cfg.target_cvr)

    def sample(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """``n`` rows of features: ids (int64) per categorical field and ``dense`` [n, n_dense]."""
        cfg = self.cfg
        rows = {name: self.perm[name][self.samplers[name](rng.random(n))] for name in ("user", "advertiser", "item")}
        rows["context"] = rng.integers(0, cfg.n_contexts, n)
        rows["dense"] = rng.standard_normal((n, cfg.n_dense))
        return rows

    def _parts(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        """``[3, n]``: first-order, pairwise and dense parts, standardised on the calibration sample."""
        first = sum(self.first[name][rows[name]] for name in ("user", "advertiser", "item", "context"))
        pair = (self.latent_user[rows["user"]] * self.latent_item[rows["item"]]).sum(axis=1)
        dense = rows["dense"] @ self.dense_w if self.cfg.n_dense else np.zeros(len(first))
        raw = np.stack([first, pair, dense])
        return (raw - self.loc[:, None]) / self.scale[:, None]

    def _logit_unbiased(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        cfg = self.cfg
        first, pair, dense = self._parts(rows)
        w_first = 1.0 - cfg.pairwise_share - cfg.dense_share
        z = math.sqrt(w_first) * first + math.sqrt(cfg.pairwise_share) * pair + math.sqrt(cfg.dense_share) * dense
        return cfg.logit_scale * z

    def prob(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        """The true probability that a click ever converts, ``[n]`` float64."""
        return sigmoid(self._logit_unbiased(rows) + self.bias)

    def block(self, split: str, index: int, n: int) -> tuple[pa.RecordBatch, np.ndarray, np.ndarray]:
        """Rows of block ``index`` of ``split``: (record batch, true probability of a conversion
        seen by the log's end, whether one was seen)."""
        cfg = self.cfg
        rng = seeded_rng(cfg.seed, SPLIT_KEY[split], index)
        rows = self.sample(rng, n)
        p = self.prob(rows)
        first_day, last_day, end_day = cfg.click_span_days(split)
        click = np.floor((first_day + (last_day - first_day) * rng.random(n)) * DAY_S).astype(np.int64)
        end = round(end_day * DAY_S)
        rate = self.rate_per_day[rows["advertiser"]]
        converts = rng.random(n) < p
        delay = np.ceil(rng.exponential(1.0 / rate) * DAY_S).astype(np.int64)
        seen = converts & (click + delay <= end)
        p_seen = true_window_probability(p, rate, (end - click) / DAY_S)
        conv = pa.array(click + delay, mask=~seen)
        arrays = [pa.array(click), conv, pa.array(np.full(n, end, dtype=np.int64))]
        arrays += [pc.cast(pa.array(rows[name]), pa.string()) for name in ("advertiser", "user", "item", "context")]
        arrays += [pa.array(rows["dense"][:, j]) for j in range(cfg.n_dense)]
        arrays += [pa.array(p), pa.array(rate)]
        return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(cfg)), p_seen, seen.astype(np.uint8)

    def summary(self) -> dict:
        return {
            "bias": self.bias,
            "delay_rate_per_day": self.rate_per_day.tolist(),  # advertiser id i -> its planted rate
            "mean_delay_days": (1.0 / self.rate_per_day).tolist(),
        }
