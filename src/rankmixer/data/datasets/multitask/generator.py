"""The planted multi-task model: id sampling, the components ``S`` and ``A_t`` and each task's
true click probability (formula in :class:`.config.MultitaskConfig`).

Each component ``c`` (0 = shared, 1 + t = task t's own) has, per field, a first-order weight and
a ``latent_dim`` vector for every id; its pairwise part is the FM sum over field pairs,
``((sum_f v_f)^2 - sum_f v_f^2) / 2`` summed over the latent axis. Both parts are standardised on
a calibration sample (their own random stream) and mixed by ``pairwise_share``, so every
component has unit variance there, and each task's bias is solved on the same sample for its
mean click rate.
"""

from __future__ import annotations

import math

import numpy as np

from rankmixer.data.datasets.calibration import sigmoid, solve_bias
from rankmixer.data.datasets.multitask.config import CALIBRATION_ROWS, MultitaskConfig
from rankmixer.data.datasets.synthetic.sampling import CALIB_KEY, PARAM_KEY, ZipfSampler, seeded_rng


class Generator:
    def __init__(self, cfg: MultitaskConfig):
        self.cfg = cfg
        rng = seeded_rng(cfg.seed, PARAM_KEY)
        F, V, k, C = cfg.n_fields, cfg.vocab, cfg.latent_dim, len(cfg.tasks) + 1
        self.sampler = ZipfSampler(V, cfg.zipf_exponent)
        self.perm = np.stack([rng.permutation(V) for _ in range(F)])  # which id is how popular, per field
        self.first = rng.standard_normal((C, F, V))
        self.latent = rng.standard_normal((C, F, V, k)) / math.sqrt(k)
        self.loc = np.zeros((C, 2))
        self.scale = np.ones((C, 2))
        calib = self.sample(seeded_rng(cfg.seed, CALIB_KEY), CALIBRATION_ROWS)
        parts = self._parts(calib)
        self.loc, self.scale = parts.mean(axis=2), parts.std(axis=2)
        z = self._logits_unbiased(calib)
        self.bias = np.array([solve_bias(z[:, t], r) for t, r in enumerate(cfg.ctr())])

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` rows of ids, ``[n, n_fields]`` int64 in [0, vocab)."""
        ranks = self.sampler(rng.random((n, self.cfg.n_fields)))
        return np.take_along_axis(self.perm.T, ranks, axis=0)

    def _parts(self, ids: np.ndarray) -> np.ndarray:
        """``[C, 2, n]``: each component's first-order and pairwise parts, standardised."""
        F = self.cfg.n_fields
        fields = np.arange(F)
        first = self.first[:, fields, ids].sum(axis=2)  # [C, n]
        v = self.latent[:, fields, ids]  # [C, n, F, k]
        pair = 0.5 * ((v.sum(axis=2) ** 2) - (v ** 2).sum(axis=2)).sum(axis=2)  # [C, n]
        raw = np.stack([first, pair], axis=1)
        return (raw - self.loc[:, :, None]) / self.scale[:, :, None]

    def _logits_unbiased(self, ids: np.ndarray) -> np.ndarray:
        cfg = self.cfg
        parts = self._parts(ids)
        comp = math.sqrt(1 - cfg.pairwise_share) * parts[:, 0] + math.sqrt(cfg.pairwise_share) * parts[:, 1]  # [C, n]
        z = math.sqrt(1 - cfg.conflict) * comp[0][None] + math.sqrt(cfg.conflict) * comp[1:]  # [T, n]
        return cfg.logit_scale * z.T

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Every task's true logit, ``[n, T]`` float64."""
        return self._logits_unbiased(ids) + self.bias

    def prob(self, ids: np.ndarray) -> np.ndarray:
        """Every task's true click probability, ``[n, T]`` float64."""
        return sigmoid(self.logits(ids))

    def summary(self) -> dict:
        calib = self.logits(self.sample(seeded_rng(self.cfg.seed, CALIB_KEY), CALIBRATION_ROWS))
        corr = np.corrcoef(calib.T)
        return {
            "tasks": list(self.cfg.tasks),
            "bias": self.bias.tolist(),
            "logit_correlation_planted": 1.0 - self.cfg.conflict,
            "logit_correlation_calibration": [[round(float(c), 4) for c in row] for row in corr],
        }
