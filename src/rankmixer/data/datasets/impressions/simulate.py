"""The synthetic impression log: users' request timelines with a planted page-context effect.

Each user (``requests_per_user`` requests, an hour apart on average) likes ``n_interests``
categories. A request shows a page of ``page_size`` items: each of one of the user's interests
with probability ``interest_share``, else a globally popular one (Zipf categories, Zipf items
within a category; item ``i`` is of category ``i % n_categories``). The user's clicks on a page:

* a **noisy page** (probability ``noisy_page_rate``, not observable): every item is clicked with
  probability ``noisy_click_rate``, whatever it is;
* otherwise item ``j`` (category ``c``) is clicked with probability ``sigmoid(logit_j)``,
  ``logit_j = bias + first * b_item + context * z(ctx(c)) + interest * z([c liked])``, where
  ``z`` standardises on a calibration sample and

  ``ctx(c) = sum over the last max_pages pages k = 1, 2, ... back of context_decay ** (k - 1)
  * (clicks on category c in page k) * (unclicked items of page k) / (page_size - 1)``:

  a click counts by how many of its neighbours on the same page were left unclicked, so a
  click among unclicked neighbours carries the signal and a page clicked all over (a noisy one)
  carries almost none. Only a model that sees each click together with the rest of its page
  can compute it; the clicked items alone, or every exposure with its own feedback but
  without its page, cannot.

The true probability of a click given what can be observed is ``bayes_p = (1 - rho) *
sigmoid(logit) + rho * noisy_click_rate`` (``rho = noisy_page_rate``), written with every
exposure; its AUC against the labels is the Bayes-optimal AUC. ``bias`` is solved so that the
non-noisy pages click at ``target_ctr``; the standardisation and the bias come from a fixed
calibration run of 2,000 users (two fixed-point passes: the context depends on earlier clicks,
which depend on the bias).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from rankmixer.data.datasets.calibration import sigmoid, solve_bias
from rankmixer.data.datasets.impressions.config import ImpressionConfig
from rankmixer.data.datasets.synthetic.sampling import CALIB_KEY, PARAM_KEY, SPLIT_KEY, ZipfSampler, seeded_rng

CALIB_USERS = 2_000
MEAN_GAP_S = 3_600.0


@dataclass
class Planted:
    """The planted model's parameters and standardisation (from the seed)."""

    item_bias: np.ndarray
    bias: float = 0.0
    ctx_mean: float = 0.0
    ctx_std: float = 1.0
    liked_mean: float = 0.0
    liked_std: float = 1.0


class Simulator:
    def __init__(self, cfg: ImpressionConfig):
        self.cfg = cfg
        self._cat = ZipfSampler(cfg.n_categories, cfg.zipf_exponent)
        self._within = ZipfSampler(cfg.n_items // cfg.n_categories, cfg.zipf_exponent)
        rng = seeded_rng(cfg.seed, PARAM_KEY)
        self.planted = Planted(item_bias=rng.standard_normal(cfg.n_items))
        for _ in range(2):  # fixed point: standardise and solve the bias on the calibration run
            sim = self.simulate(seeded_rng(cfg.seed, CALIB_KEY), CALIB_USERS)
            clean = ~sim["noisy"]
            ctx, liked = sim["ctx"][clean], sim["liked"][clean].astype(float)
            p = self.planted
            p.ctx_mean, p.ctx_std = float(ctx.mean()), float(ctx.std()) or 1.0
            p.liked_mean, p.liked_std = float(liked.mean()), float(liked.std()) or 1.0
            p.bias = 0.0
            p.bias = solve_bias(self._logit(sim["item"][clean], ctx, liked), cfg.target_ctr)

    def _items_in(self, rng: np.random.Generator, cat: np.ndarray) -> np.ndarray:
        return cat + self.cfg.n_categories * self._within(rng.random(cat.shape))

    def _logit(self, item: np.ndarray, ctx: np.ndarray, liked: np.ndarray) -> np.ndarray:
        cfg, p = self.cfg, self.planted
        return (p.bias + cfg.first_order_scale * p.item_bias[item]
                + cfg.context_scale * (ctx - p.ctx_mean) / p.ctx_std
                + cfg.interest_scale * (liked - p.liked_mean) / p.liked_std)

    def simulate(self, rng: np.random.Generator, n_users: int) -> dict[str, np.ndarray]:
        """Every user's timeline, vectorised over users: arrays ``[U, T, I]`` (``noisy`` [U, T])."""
        cfg = self.cfg
        U, T, I, P = n_users, cfg.requests_per_user, cfg.page_size, cfg.max_pages
        interests = self._cat(rng.random((U, cfg.n_interests)))
        item = np.empty((U, T, I), dtype=np.int64)
        click = np.zeros((U, T, I), dtype=bool)
        ctx = np.zeros((U, T, I))
        prob = np.zeros((U, T, I))
        noisy = rng.random((U, T)) < cfg.noisy_page_rate
        from_interest = rng.random((U, T, I)) < cfg.interest_share
        pick = rng.integers(0, cfg.n_interests, (U, T, I))
        cat = np.where(from_interest, np.take_along_axis(interests, pick.reshape(U, -1), 1).reshape(U, T, I),
                       self._cat(rng.random((U, T, I))))
        item[:] = self._items_in(rng, cat)
        liked = (cat[..., None] == interests[:, None, None, :]).any(-1)
        u_click = rng.random((U, T, I))
        for t in range(T):
            c = cat[:, t]  # [U, I]
            for k in range(1, min(P, t) + 1):
                page = t - k
                sel = (I - click[:, page].sum(1)) / (I - 1)  # [U] unclicked share of a click's neighbours
                hits = ((cat[:, page, None, :] == c[:, :, None]) & click[:, page, None, :]).sum(-1)  # [U, I]
                ctx[:, t] += cfg.context_decay ** (k - 1) * hits * sel[:, None]
            p = sigmoid(self._logit(item[:, t], ctx[:, t], liked[:, t]))
            prob[:, t] = p
            rate = np.where(noisy[:, t, None], cfg.noisy_click_rate, p)
            click[:, t] = u_click[:, t] < rate
        return {"item": item, "cat": cat, "click": click, "ctx": ctx, "liked": liked, "prob": prob,
                "noisy": np.broadcast_to(noisy[..., None], (U, T, I)).copy()}

    def log(self, split: str) -> pl.DataFrame:
        """The impression log of ``split``: one row per exposure, requests in time order
        (columns of :func:`~rankmixer.data.datasets.impressions.builder.build_rows`'s input, plus
        ``bayes_p``). Users of different splits are different people (ids offset per split)."""
        cfg = self.cfg
        U, T, I = cfg.users(split), cfg.requests_per_user, cfg.page_size
        rng = seeded_rng(cfg.seed, SPLIT_KEY[split])
        sim = self.simulate(rng, U)
        times = np.cumsum(np.floor(rng.exponential(MEAN_GAP_S, (U, T))) + 1, axis=1).astype(np.int64)
        rho = cfg.noisy_page_rate
        offset = {"train": 0, "valid": 10_000_000, "test": 20_000_000}[split]
        user = np.arange(U, dtype=np.int64)[:, None, None] + offset
        request = (user * T + np.arange(T)[None, :, None])
        return pl.DataFrame({
            "user": np.broadcast_to(user, (U, T, I)).ravel(),
            "request": np.broadcast_to(request, (U, T, I)).ravel(),
            "time": np.broadcast_to(times[..., None], (U, T, I)).ravel(),
            "position": np.broadcast_to(np.arange(I), (U, T, I)).ravel(),
            "item": sim["item"].ravel(),
            "cat": sim["cat"].ravel(),
            "click": sim["click"].ravel().astype(np.int8),
            "bayes_p": ((1 - rho) * sim["prob"] + rho * cfg.noisy_click_rate).ravel(),
        })

    def summary(self) -> dict:
        p, cfg = self.planted, self.cfg
        return {"bias": p.bias, "context": {"mean": p.ctx_mean, "std": p.ctx_std, "scale": cfg.context_scale,
                                            "decay": cfg.context_decay},
                "interest": {"mean": p.liked_mean, "std": p.liked_std, "scale": cfg.interest_scale},
                "first_order_scale": cfg.first_order_scale, "noisy_page_rate": cfg.noisy_page_rate,
                "noisy_click_rate": cfg.noisy_click_rate}
