"""Seeded random streams, the bounded Zipf sampler and a single-thread BLAS guard (generator).

Every random number comes from ``seeded_rng(seed, *key)``: the planted model's parameters
(key ``PARAM_KEY``), its calibration sample (``CALIB_KEY``) and every block of every split
(``SPLIT_KEY[split], block index``) each have a stream of their own, so no stream depends on
how many numbers another one drew.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np

PARAM_KEY, CALIB_KEY, DRIFT_KEY, DAY_SHARD_KEY = 0, 4, 5, 6
SPLIT_KEY = {"train": 1, "valid": 2, "test": 3}


def seeded_rng(seed: int, *key: int) -> np.random.Generator:
    """The random stream named ``key`` under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


class ZipfSampler:
    """Exact inverse-CDF sampling of a bounded Zipf law, several times faster than a plain
    ``searchsorted`` over the whole CDF.

    A guide table over ``M`` (a power of two, so ``floor(u * M)`` is exact) equal slices of
    [0, 1) holds, per slice, the range of ids whose CDF step can contain ``u``; only draws whose
    slice spans more than one id need a (short, vectorised) binary search. The result equals
    ``np.searchsorted(cdf, u, side="right")`` exactly.
    """

    def __init__(self, vocab: int, exponent: float):
        w = np.arange(1, vocab + 1, dtype=np.float64) ** -exponent
        cdf = np.cumsum(w)
        cdf /= cdf[-1]
        self.cdf = cdf
        self.vocab = vocab
        self.m = 1 << min(24, max(4, math.ceil(math.log2(8 * vocab))))
        guide = np.searchsorted(cdf, np.arange(self.m + 1, dtype=np.float64) / self.m, side="right")
        self.guide = np.minimum(guide, vocab - 1).astype(np.int32 if vocab < 2**31 else np.int64)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        shape, u = u.shape, u.ravel()
        k = (u * self.m).astype(np.int64)
        out = self.guide[k].astype(np.int64)
        hi_all = self.guide[k + 1]
        idx = np.flatnonzero(out < hi_all)
        if idx.size:
            lo, hi, uu = out[idx], hi_all[idx].astype(np.int64), u[idx]
            while True:
                active = lo < hi
                if not active.any():
                    break
                mid = (lo + hi) >> 1
                right = self.cdf[mid] <= uu
                lo = np.where(active & right, mid + 1, lo)
                hi = np.where(active & ~right, mid, hi)
            out[idx] = lo
        return out.reshape(shape)


_BLAS = None


def single_thread_blas():
    """Run the few matrix products single-threaded: on a small or busy machine OpenBLAS's
    spinning worker threads make them 10-20x slower, and one thread also keeps the results
    independent of the thread count. A no-op without threadpoolctl (a scikit-learn dependency)."""
    global _BLAS
    if _BLAS is None:
        try:
            from threadpoolctl import ThreadpoolController

            _BLAS = ThreadpoolController()
        except ImportError:  # pragma: no cover - optional
            _BLAS = False
    return _BLAS.limit(limits=1, user_api="blas") if _BLAS else contextlib.nullcontext()

