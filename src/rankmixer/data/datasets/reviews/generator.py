"""The planted model of the review-ranking set: items with reviews, users with tastes, clicks.

* **Taste aspects**: the ``n_aspects`` most frequent normalised aspects of the sampled ASTE-V2
  sentences (ties: alphabetical).
* **Items**: each is good or bad on each taste aspect (a fair coin) and gets
  ``reviews_min..reviews_max`` reviews. A review is, with probability ``aspect_review_rate``, a
  sentence on a uniformly chosen taste aspect whose gold sentiment on it matches the item's
  verdict (with probability ``consistency``; else any sentence on the aspect), otherwise any
  sentence. The item's **true profile** is read from the gold triplets of its reviews:
  ``s[i, a] = (positive - negative triplets on aspect a) / all triplets of the item`` (0 without
  triplets): its net sentiment share per aspect.
* **Users**: a taste ``t[u, a] ~ N(0, 1)`` per aspect (written with each impression).
* **Clicks**: ``logit = c + b_u + b_i + review_scale * (t[u] . s[i]) / norm`` with user and
  item biases ``b ~ N(0, first_order_scale^2 / 2)``, ``norm = sqrt(mean_i |s[i]|^2)`` (so the
  review term's standard deviation over random pairs is ``review_scale``) and ``c`` set so the
  mean click probability over random pairs is ``target_ctr``; ``click ~ Bernoulli(sigmoid(logit))``.
  Impressions pair a uniform user with a uniform item.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from rankmixer.data.datasets.generated import SPLITS
from rankmixer.data.datasets.reviews.config import ReviewsConfig
from rankmixer.data.datasets.reviews.corpus import CorpusSentence, read_corpus

SIGN = {"positive": 1, "neutral": 0, "negative": -1}


def sentence_sign(sentence: CorpusSentence, aspect: str) -> int:
    """+1 / -1 when the sentence's gold sentiment on ``aspect`` is net positive / negative, else 0."""
    return int(np.sign(sum(SIGN[s] for a, s in sentence.aspects if a == aspect)))


def solve_bias(z: np.ndarray, target: float) -> float:
    """The c with mean(sigmoid(c + z)) = target (bisection; the mean is increasing in c)."""
    lo, hi = -30.0, 30.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if np.mean(1 / (1 + np.exp(-(mid + z)))) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class Generator:
    """Reviews, profiles, tastes and biases (built once from the seed); :meth:`impressions`
    draws one block of rows."""

    def __init__(self, cfg: ReviewsConfig):
        self.cfg = cfg
        self.corpus = read_corpus(cfg.aste_dir, cfg.aste_datasets, cfg.aste_split)
        counts = Counter(a for s in self.corpus for a, _ in s.aspects)
        self.aspects = [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))][: cfg.n_aspects]
        if len(self.aspects) < cfg.n_aspects:
            raise ValueError(f"n_aspects is {cfg.n_aspects}, but the sentences of {', '.join(cfg.aste_datasets)} "
                             f"({cfg.aste_split}) have only {len(self.aspects)} distinct aspects")
        rng = np.random.default_rng([cfg.seed, 0])
        self.review_item, self.review_sentence = self._reviews(rng)
        self.profile = self._profile()
        k = len(self.aspects)
        self.taste = rng.standard_normal((cfg.n_users, k))
        scale = cfg.first_order_scale / np.sqrt(2)
        self.user_bias = rng.normal(0.0, scale, cfg.n_users)
        self.item_bias = rng.normal(0.0, scale, cfg.n_items)
        self.norm = float(np.sqrt(np.mean((self.profile ** 2).sum(axis=1)))) or 1.0
        u, i = rng.integers(cfg.n_users, size=20_000), rng.integers(cfg.n_items, size=20_000)
        self.bias = solve_bias(self._logit_terms(u, i), cfg.target_ctr)

    def _reviews(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(item, sentence index) of every review, grouped by item."""
        cfg = self.cfg
        on = {a: [j for j, s in enumerate(self.corpus) if any(x == a for x, _ in s.aspects)] for a in self.aspects}
        by_sign = {(a, sign): [j for j in on[a] if sentence_sign(self.corpus[j], a) == sign] or on[a]
                   for a in self.aspects for sign in (1, -1)}
        verdict = np.where(rng.random((cfg.n_items, len(self.aspects))) < 0.5, 1, -1)
        items, sentences = [], []
        for item in range(cfg.n_items):
            for _ in range(int(rng.integers(cfg.reviews_min, cfg.reviews_max + 1))):
                if rng.random() < cfg.aspect_review_rate:
                    k = int(rng.integers(len(self.aspects)))
                    a = self.aspects[k]
                    pool = by_sign[(a, int(verdict[item, k]))] if rng.random() < cfg.consistency else on[a]
                    j = pool[int(rng.integers(len(pool)))]
                else:
                    j = int(rng.integers(len(self.corpus)))
                items.append(item)
                sentences.append(j)
        return np.asarray(items), np.asarray(sentences)

    def _profile(self) -> np.ndarray:
        """s[item, aspect]: net sentiment share of the item's gold triplets (module docstring)."""
        index = {a: k for k, a in enumerate(self.aspects)}
        net = np.zeros((self.cfg.n_items, len(self.aspects)))
        total = np.zeros(self.cfg.n_items)
        for item, j in zip(self.review_item, self.review_sentence):
            for a, s in self.corpus[j].aspects:
                total[item] += 1
                if a in index:
                    net[item, index[a]] += SIGN[s]
        return net / np.maximum(total, 1)[:, None]

    def _logit_terms(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        review = np.einsum("na,na->n", self.taste[users], self.profile[items]) / self.norm
        return self.user_bias[users] + self.item_bias[items] + self.cfg.review_scale * review

    def impressions(self, split: str, index: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Block ``index`` of ``split``: users, items, true click probabilities and clicks."""
        rng = np.random.default_rng([self.cfg.seed, 1 + SPLITS.index(split), index])
        users = rng.integers(self.cfg.n_users, size=n)
        items = rng.integers(self.cfg.n_items, size=n)
        p = 1 / (1 + np.exp(-(self.bias + self._logit_terms(users, items))))
        return users, items, p, rng.random(n) < p

    def summary(self) -> dict:
        return {
            "aspects": self.aspects, "sentences": len(self.corpus), "reviews": int(len(self.review_item)),
            "reviews_with_triplets": int(sum(bool(self.corpus[j].aspects) for j in self.review_sentence)),
            "review_norm": self.norm, "bias": self.bias,
            "logit": "bias + user_bias + item_bias + review_scale * (taste[user] . profile[item]) / review_norm",
        }
