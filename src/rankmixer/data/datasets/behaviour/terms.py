"""The planted model's sequence terms, computed from flattened histories (pure numpy).

For a row with candidate item ``i`` (category ``c``) and history positions at ``lag`` 1 (the
newest), 2, ...:

* ``attention`` = max over lag <= ``attention_window`` of ``type_weight[type] * match``, where
  match is 1 for the candidate's item, ``same_category_match`` for another item of its
  category, 0 otherwise; 0 for an empty window. Target attention: the *best single* recent
  behaviour counts, not an average.
* ``recency`` = sum over lag <= ``last_k`` of ``recency_decay ** (lag - 1) * [cat == c]``,
  divided by the sum of the weights: how much of the last few behaviours share the candidate's
  category, the newest counting most.
* ``return`` = 1 if item ``i`` was seen at a lag within ``return_window`` of
  ``return_period`` (a periodic return), else 0.

Each depends on *where* in the history a behaviour sits, so no function of the history as an
unordered bag (mean or sum pooling, attention without positions) can compute it.
"""

from __future__ import annotations

import numpy as np

from rankmixer.data.datasets.behaviour.config import BehaviourConfig

TERMS = ("attention", "recency", "return")


def type_weights(n_types: int) -> np.ndarray:
    """Type t weighs 1 + t / 2: rarer behaviour types (cart, buy) show stronger intent."""
    return 1.0 + 0.5 * np.arange(n_types, dtype=np.float64)


def sequence_terms(
    cfg: BehaviourConfig,
    offsets: np.ndarray,
    hist_item: np.ndarray,
    hist_type: np.ndarray,
    cand_item: np.ndarray,
) -> dict[str, np.ndarray]:
    """The three sequence terms (float64 [n]) of rows whose histories are ``offsets`` /
    ``hist_item`` / ``hist_type`` (oldest first) and whose candidates are ``cand_item``."""
    n = cand_item.shape[0]
    length = np.diff(offsets)
    row = np.repeat(np.arange(n), length)
    lag = offsets[1:][row] - np.arange(hist_item.shape[0])  # 1 = the newest behaviour
    cand = cand_item[row]
    same_item = hist_item == cand
    same_cat = hist_item % cfg.n_categories == cand % cfg.n_categories

    att = np.zeros(n)
    m = lag <= cfg.attention_window
    match = np.where(same_item, 1.0, np.where(same_cat, cfg.same_category_match, 0.0))
    np.maximum.at(att, row[m], (type_weights(cfg.n_types)[hist_type] * match)[m])

    m = (lag <= cfg.last_k) & same_cat
    norm = (cfg.recency_decay ** np.arange(cfg.last_k)).sum()
    rec = np.bincount(row[m], weights=cfg.recency_decay ** (lag[m] - 1.0), minlength=n) / norm

    ret = np.zeros(n)
    m = same_item & (np.abs(lag - cfg.return_period) <= cfg.return_window)
    ret[row[m]] = 1.0
    return {"attention": att, "recency": rec, "return": ret}
