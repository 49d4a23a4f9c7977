"""Behaviour histories: drifting interests, periodic returns, behaviour types and time gaps.

A history of length L is generated oldest first. The user has ``n_interests`` interest slots,
each holding a category; at the first behaviour they hold the user's base interests, and before
every behaviour each slot independently switches to a fresh (Zipf-drawn) category with
probability ``drift_rate``, so a long history's recent interests differ from its early ones.
Each behaviour picks one slot uniformly and an item of that slot's category (Zipf within the
category). With probability ``return_rate`` a behaviour at position t >= ``return_period``
instead repeats the item at t - ``return_period`` (a periodic return: the same item comes back
every ``return_period`` positions). The type is t with probability proportional to 0.3 ** t
(click common, buy rare). ``dt`` (seconds before the request) is an exponential gap for the
newest behaviour plus exponential gaps of mean ``dt_mean_gap`` between behaviours, floored to
integers: non-negative and non-decreasing toward the oldest.

With ``history: sessions`` (:func:`sample_session_histories`) the history is instead a run of
sessions: a new session starts at each position with probability ``1 / session_len_mean``
(the first position always); each session draws one of the user's themes (the ``n_interests``
base categories) by the user's own theme weights, or, with probability ``explore_rate``, explores
a popular category off them (a one-off visit); its behaviours are items of that category, except
a ``theme_noise`` share of popular items from anywhere. Gaps are exponential
of mean ``within_gap_mean`` inside a session and ``session_pause_min`` + exponential of mean
``session_pause_mean`` between sessions.

Everything is vectorised over a block's flattened positions (no loop over rows or positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rankmixer.data.datasets.behaviour.catalog import Catalog
from rankmixer.data.datasets.behaviour.config import BehaviourConfig

TYPE_RATIO = 0.3  # P(type t) ~ TYPE_RATIO ** t


@dataclass
class History:
    """The histories of a block of rows, flattened: row r holds ``offsets[r]:offsets[r + 1]``,
    oldest first."""

    offsets: np.ndarray  # [n + 1] int64
    item: np.ndarray  # [T] int64
    type: np.ndarray  # [T] int64 in [0, n_types)
    dt: np.ndarray  # [T] int64 seconds before the request
    interests: np.ndarray  # [n, n_interests] the slots' categories after the newest behaviour
    # history: sessions only. Per position: its session counted from the row's newest (0), and
    # the category its session is on (the latent theme; the behaviour itself may be noise).
    session: np.ndarray | None = None  # [T] int64
    session_theme: np.ndarray | None = None  # [T] int64


def type_probs(n_types: int) -> np.ndarray:
    w = TYPE_RATIO ** np.arange(n_types, dtype=np.float64)
    return w / w.sum()


def sample_histories(
    rng: np.random.Generator, cfg: BehaviourConfig, catalog: Catalog, base: np.ndarray, length: np.ndarray
) -> History:
    """Histories of ``length[r]`` behaviours for rows whose users' base interests are ``base``
    ([n, n_interests] categories)."""
    n, n_slots = base.shape
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    total = int(offsets[-1])
    row = np.repeat(np.arange(n), length)
    start = offsets[:-1][row]
    idx = np.arange(total)
    last_pos = offsets[1:] - 1
    nonempty = length > 0

    # Interest drift: a slot's category at a position is the one drawn at its latest switch
    # within the row, or the user's base interest before the first.
    slot = rng.integers(0, n_slots, total)
    cat = np.empty(total, dtype=np.int64)
    interests = base.copy()
    for k in range(n_slots):
        switch = rng.random(total) < cfg.drift_rate
        drawn = np.zeros(total, dtype=np.int64)
        drawn[switch] = catalog.categories(rng, int(np.count_nonzero(switch)))
        latest = np.maximum.accumulate(np.where(switch, idx, -1)) if total else idx
        current = np.where(latest >= start, drawn[np.maximum(latest, 0)], base[row, k])
        cat[slot == k] = current[slot == k]
        interests[nonempty, k] = current[last_pos[nonempty]]
    item = catalog.items_in(rng, cat)

    # Periodic returns; a repeat of a repeat resolves to the original behaviour.
    period = cfg.return_period
    repeat = (rng.random(total) < cfg.return_rate) & (idx - start >= period)
    src = np.where(repeat, idx - period, idx)
    while True:
        nxt = np.where(repeat[src], src - period, src)
        if np.array_equal(nxt, src):
            break
        src = nxt
    item = item[src]

    types = rng.choice(cfg.n_types, size=total, p=type_probs(cfg.n_types))
    newest = rng.exponential(cfg.dt_mean_gap, n)
    gaps = rng.exponential(cfg.dt_mean_gap, total)
    return History(offsets, item, types.astype(np.int64), _time_gaps(newest, gaps, row, last_pos), interests)


def _time_gaps(newest: np.ndarray, gaps: np.ndarray, row: np.ndarray, last_pos: np.ndarray) -> np.ndarray:
    """dt of every position: its row's newest gap plus every gap after it within the row
    (``gaps[k]`` lies between positions k - 1 and k), floored to whole seconds."""
    csum = np.cumsum(gaps)
    after = csum[last_pos[row]] - csum if gaps.size else gaps
    return np.floor(newest[row] + after).astype(np.int64)


def sample_session_histories(
    rng: np.random.Generator, cfg: BehaviourConfig, catalog: Catalog, themes: np.ndarray,
    theme_weights: np.ndarray, length: np.ndarray,
) -> History:
    """Session-hopping histories of ``length[r]`` behaviours for rows whose users' themes are
    ``themes`` ([n, K] categories) drawn with probabilities ``theme_weights`` ([n, K])."""
    n, k = themes.shape
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    total = int(offsets[-1])
    row = np.repeat(np.arange(n), length)
    first = np.zeros(total, dtype=bool)
    first[offsets[:-1][length > 0]] = True
    start = first | (rng.random(total) < 1.0 / cfg.session_len_mean)
    sid = np.cumsum(start) - 1  # the block's sessions, oldest first within each row
    n_sessions = int(sid[-1]) + 1 if total else 0
    s_row = row[start]
    # Each session's theme: inverse CDF of its user's weights.
    cdf = np.cumsum(theme_weights[s_row], axis=1)
    slot = np.minimum((rng.random(n_sessions)[:, None] > cdf).sum(axis=1), k - 1)
    s_theme = np.where(rng.random(n_sessions) < cfg.explore_rate, catalog.categories(rng, n_sessions),
                       themes[s_row, slot])
    theme = s_theme[sid]
    noise = rng.random(total) < cfg.theme_noise
    cat = np.where(noise, catalog.categories(rng, total), theme)
    item = catalog.items_in(rng, cat)
    types = rng.choice(cfg.n_types, size=total, p=type_probs(cfg.n_types))
    # The request comes during the newest session; a session's first behaviour follows a pause.
    newest = rng.exponential(cfg.within_gap_mean, n)
    gaps = np.where(start, cfg.session_pause_min + rng.exponential(cfg.session_pause_mean, total),
                    rng.exponential(cfg.within_gap_mean, total))
    dt = _time_gaps(newest, gaps, row, offsets[1:] - 1)
    last_sid = np.full(n, -1, dtype=np.int64)
    nonempty = length > 0
    last_sid[nonempty] = sid[offsets[1:][nonempty] - 1]
    session = last_sid[row] - sid
    return History(offsets, item, types.astype(np.int64), dt, themes.copy(), session, theme)
