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
    # dt: the newest behaviour's gap plus every gap after position j within its row.
    newest = rng.exponential(cfg.dt_mean_gap, n)
    gaps = rng.exponential(cfg.dt_mean_gap, total)
    csum = np.cumsum(gaps)
    after = csum[last_pos[row]] - csum if total else gaps
    dt = np.floor(newest[row] + after).astype(np.int64)
    return History(offsets, item, types.astype(np.int64), dt, interests)
