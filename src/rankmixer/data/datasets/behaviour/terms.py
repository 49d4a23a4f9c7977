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

Session-hopping histories (``history: sessions``) add two terms over the latent session themes
(:func:`session_terms`), where ``c`` is the candidate's category:

* ``theme`` = the share of the last ``theme_sessions`` sessions whose theme is ``c``: how often
  the user came back to the theme, however long each visit was (0 for an empty history);
* ``session`` = 1 if the newest session's theme is ``c``, else 0: the interest of the moment.

Both count sessions, not behaviours: a long session weighs what a short one does, so a model
must see where sessions begin and end (or infer their themes) to compute them.
"""

from __future__ import annotations

import numpy as np

from rankmixer.data.datasets.behaviour.config import BehaviourConfig

TERMS = ("attention", "recency", "return")
SESSION_TERMS = ("theme", "session")


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


def session_terms(
    cfg: BehaviourConfig, offsets: np.ndarray, session: np.ndarray, session_theme: np.ndarray, cand_cat: np.ndarray,
) -> dict[str, np.ndarray]:
    """The two session terms (float64 [n]) from each position's session index counted from the
    newest (``session``) and its session's theme (``session_theme``)."""
    n = cand_cat.shape[0]
    length = np.diff(offsets)
    row = np.repeat(np.arange(n), length)
    # One position per session stands for it: the session's newest position (its index
    # changes, or the row ends, right after it).
    nxt = np.ones(session.shape[0], dtype=bool)
    nxt[:-1] = session[1:] != session[:-1]
    nxt[offsets[1:][length > 0] - 1] = True
    rep = nxt & (session < cfg.theme_sessions)
    seen = np.bincount(row[rep], minlength=n)
    on_theme = np.bincount(row[rep], weights=(session_theme == cand_cat[row])[rep], minlength=n)
    theme = np.divide(on_theme, seen, out=np.zeros(n), where=seen > 0)
    now = np.zeros(n)
    m = (session == 0) & (session_theme == cand_cat[row])
    now[row[m]] = 1.0
    return {"theme": theme, "session": now}
