"""The planted model: parameters from the seed, the row sampler and the true click probability.

``logit = bias + sum_g scale_g * (term_g - mean_g) / std_g`` over six groups (those with a scale of 0 drop out), each
standardised on a fixed calibration sample (so a scale is the group's logit standard
deviation), with ``bias`` solved so that the mean CTR is ``target_ctr``:

* ``first``: user + item + category biases (independent standard normals): what a model with
  no history can learn;
* ``attention``, ``recency``, ``return``: the sequence terms of :mod:`.terms` (target attention
  over the last ``attention_window`` behaviours, the decayed last-``last_k`` category match,
  the periodic return ``return_period`` positions back);
* ``theme``, ``session``: the session terms of :mod:`.terms` (``history: sessions`` only; zero
  otherwise): the share of recent sessions on the candidate's theme, and whether the newest is.

A row: a Zipf-drawn user; a history (:mod:`.history`) whose length is 0 with probability
``empty_rate``, else 1 + Binomial(seq_len_max - 1, sigmoid(2 a - 0.5)) for the user's activity
a ~ N(0, 1) (some users short histories, some long); a candidate drawn from a recent behaviour
(``p_cand_recent``: its item or another of its category, one half each), from the behaviour
``return_period`` (+-``return_window``) positions back (``p_cand_return``), from the user's
current interests (``p_cand_interest``) or from global popularity (the rest; also when the
history is too short for the chosen kind); the label ~ Bernoulli(sigmoid(logit)).

The parameters do not depend on the row counts, so a larger ``rows_train`` keeps every full
block of rows of a smaller one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rankmixer.data.datasets.behaviour.catalog import Catalog
from rankmixer.data.datasets.calibration import sigmoid, solve_bias
from rankmixer.data.datasets.behaviour.config import BLOCK_ROWS, BehaviourConfig
from rankmixer.data.datasets.behaviour.history import History, sample_histories, sample_session_histories, type_probs
from rankmixer.data.datasets.behaviour.terms import SESSION_TERMS, TERMS, sequence_terms, session_terms, type_weights
from rankmixer.data.datasets.synthetic.sampling import CALIB_KEY, PARAM_KEY, ZipfSampler, seeded_rng

GROUPS = ("first", *TERMS, *SESSION_TERMS)
_CALIB_ROWS = BLOCK_ROWS
CANDIDATE_KINDS = ("recent", "return", "interest", "popular")


@dataclass
class Rows:
    """One block of sampled rows (ids, not yet strings)."""

    user: np.ndarray  # [n]
    item: np.ndarray  # [n] the candidate
    kind: np.ndarray  # [n] index into CANDIDATE_KINDS (how the candidate was drawn)
    hist: History

    @property
    def n(self) -> int:
        return self.user.shape[0]


class Generator:
    """Ground-truth parameters (from the seed), the row sampler and the true probability."""

    def __init__(self, cfg: BehaviourConfig):
        self.cfg = cfg
        self.catalog = Catalog(cfg)
        self._users = ZipfSampler(cfg.n_users, cfg.user_zipf_exponent)
        rng = seeded_rng(cfg.seed, PARAM_KEY)
        self.base_interests = self.catalog.categories(rng, (cfg.n_users, cfg.n_interests))
        self.activity = rng.standard_normal(cfg.n_users)
        self.user_bias = rng.standard_normal(cfg.n_users)
        self.item_bias = rng.standard_normal(cfg.n_items)
        self.cat_bias = rng.standard_normal(cfg.n_categories)
        self.scales = {"first": cfg.first_order_scale, "attention": cfg.attention_scale,
                       "recency": cfg.recency_scale, "return": cfg.return_scale,
                       "theme": cfg.theme_scale, "session": cfg.session_scale}
        # history: sessions: each user's weights over its themes (drawn last, so the drift
        # set's parameters are the same draws as without them).
        self.theme_weights = rng.dirichlet(np.ones(cfg.n_interests), cfg.n_users) if cfg.history == "sessions" else None
        self._calibrate()

    def _calibrate(self) -> None:
        """Standardise every group and solve the bias on a fixed sample of the row law."""
        rows = self.sample(seeded_rng(self.cfg.seed, CALIB_KEY), _CALIB_ROWS)
        terms = self.terms(rows)
        self.stats = {g: (float(v.mean()), float(v.std()) if v.std() > 1e-12 else 1.0) for g, v in terms.items()}
        logit = self.logit_no_bias(terms)
        self.bias = solve_bias(logit, self.cfg.target_ctr)
        self.calib_logit_std = float(logit.std())
        length = np.diff(rows.hist.offsets)
        self.calib_summary = {
            "mean_length": float(length.mean()),
            "empty_share": float((length == 0).mean()),
            "return_reachable_share": float((length >= self.cfg.return_period + self.cfg.return_window).mean()),
            "candidate_kinds": {k: float((rows.kind == i).mean()) for i, k in enumerate(CANDIDATE_KINDS)},
        }

    # -- sampling --

    def sample(self, rng: np.random.Generator, n: int) -> Rows:
        cfg, cat = self.cfg, self.catalog
        user = self._users(rng.random(n))
        length = 1 + rng.binomial(cfg.seq_len_max - 1, sigmoid(2.0 * self.activity[user] - 0.5))
        length[rng.random(n) < cfg.empty_rate] = 0
        if cfg.history == "sessions":
            hist = sample_session_histories(rng, cfg, cat, self.base_interests[user], self.theme_weights[user], length)
        else:
            hist = sample_histories(rng, cfg, cat, self.base_interests[user], length)

        # Candidate kind; popular when the history is too short for the chosen one. Every
        # kind's draw is made for every row (a fixed number of draws per block).
        edges = np.cumsum([cfg.p_cand_recent, cfg.p_cand_return, cfg.p_cand_interest])
        kind = np.searchsorted(edges, rng.random(n), side="right")
        reach = cfg.return_period + cfg.return_window
        kind[((kind == 0) & (length == 0)) | ((kind == 1) & (length < reach))] = 3
        end = hist.offsets[1:]
        window = np.minimum(np.maximum(length, 1), cfg.attention_window)
        recent = end - 1 - (rng.random(n) * window).astype(np.int64)  # a position in the window
        back = end - cfg.return_period - rng.integers(-cfg.return_window, cfg.return_window + 1, n)
        slot = rng.integers(0, cfg.n_interests, n)
        same = rng.random(n) < 0.5  # a recent candidate is that very item, else a sibling

        item = cat.items(rng, n)  # popular
        # The rows whose kind needs a history have one, so their indices are in range.
        recent_item = np.zeros(n, dtype=np.int64)
        use = kind == 0
        recent_item[use] = hist.item[recent[use]]
        sibling = cat.items_in(rng, cat.category_of(recent_item))
        interest = cat.items_in(rng, hist.interests[np.arange(n), slot])
        item[use] = np.where(same, recent_item, sibling)[use]
        use = kind == 1
        item[use] = hist.item[back[use]]
        use = kind == 2
        item[use] = interest[use]
        return Rows(user, item, kind, hist)

    # -- the model --

    def terms(self, rows: Rows) -> dict[str, np.ndarray]:
        """Every group's raw (unstandardised) value per row."""
        h = rows.hist
        first = self.user_bias[rows.user] + self.item_bias[rows.item] + self.cat_bias[self.catalog.category_of(rows.item)]
        terms = {"first": first, **sequence_terms(self.cfg, h.offsets, h.item, h.type, rows.item)}
        if h.session is not None:
            terms.update(session_terms(self.cfg, h.offsets, h.session, h.session_theme, self.catalog.category_of(rows.item)))
        else:
            terms.update({t: np.zeros(rows.n) for t in SESSION_TERMS})
        return terms

    def logit_no_bias(self, terms: dict[str, np.ndarray]) -> np.ndarray:
        out = np.zeros(next(iter(terms.values())).shape[0])
        for g in GROUPS:
            if self.scales[g]:
                mean, std = self.stats[g]
                out += self.scales[g] * (terms[g] - mean) / std
        return out

    def prob(self, rows: Rows) -> np.ndarray:
        """The true click probability of every row (float64)."""
        return sigmoid(self.bias + self.logit_no_bias(self.terms(rows)))

    def summary(self) -> dict:
        """The planted model's form and constants, for the meta file (JSON-able)."""
        cfg = self.cfg
        return {
            "bias": self.bias,
            "groups": list(GROUPS),
            "scales": self.scales,
            "standardisation": {g: {"mean": m, "std": s} for g, (m, s) in self.stats.items()},
            "type_probs": type_probs(cfg.n_types).tolist(),
            "type_weights": type_weights(cfg.n_types).tolist(),
            "attention": {"window": cfg.attention_window, "same_category_match": cfg.same_category_match},
            "recency": {"last_k": cfg.last_k, "decay": cfg.recency_decay},
            "return": {"period": cfg.return_period, "window": cfg.return_window, "rate": cfg.return_rate},
            "history": cfg.history,
            "sessions": {"len_mean": cfg.session_len_mean, "theme_sessions": cfg.theme_sessions,
                         "theme_noise": cfg.theme_noise} if cfg.history == "sessions" else None,
            "calibration_logit_std": self.calib_logit_std,
            "calibration_sample": self.calib_summary,
        }

