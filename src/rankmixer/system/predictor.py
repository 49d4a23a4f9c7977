"""The CubicML predictor: training speed and peak memory of a setting, with an uncertainty.

Inputs (:func:`encode`): every knob (one-hot for named choices; numbers as numbers, the batch
and the model's numeric overrides on a log2 scale, threads also as a fraction of the cores) and
the hardware (core count, the speed-relevant CPU flags). Targets: log samples/s and log peak
memory of the successful measurements. Model: a bag of gradient-boosted trees
(scikit-learn's ``HistGradientBoostingRegressor``), each fitted on a bootstrap resample of the
history; the members' mean is the prediction and their spread its uncertainty, which is large
where the history is thin: settings far from anything measured, or another machine.

The paper's predictor is ranked (a margin ranking loss): what the searcher needs is the order
of settings. A regression on log speed gives the order and also the ratios the searcher reports;
:func:`cross_validated_spearman` measures the order on held-out settings.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

from rankmixer.core.extras import MissingExtra
from rankmixer.core.rank_correlation import spearman
from rankmixer.system.space import Setting, SystemSpace, resolve_threads

__all__ = ["Prediction", "SpeedPredictor", "cross_validated_spearman", "encode", "fastest", "usable"]

_NAMED = ("model_size", "precision", "optimizer_impl", "ffn_impl", "allocator", "compile")


def import_sklearn():
    try:
        from sklearn.ensemble import HistGradientBoostingRegressor
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise MissingExtra("rankmixer tune-system needs scikit-learn (the package's 'system' extra): "
                           "pip install 'scikit-learn>=1.3'") from None
    return HistGradientBoostingRegressor, threadpool_limits


def usable(records: list[dict]) -> list[dict]:
    """The successful training measurements (failed ones never enter a fit)."""
    return [r for r in records if r.get("kind") == "train" and r.get("status") == "ok" and (r.get("samples_per_s") or 0) > 0]


def fastest(records: list[dict]) -> dict | None:
    """The successful measurement with the most samples/s (None: none succeeded)."""
    return max(usable(records), key=lambda r: r["samples_per_s"], default=None)


def _feature_names(space: SystemSpace, hardware: dict) -> list[str]:
    names = [f"{k}={v}" for k in _NAMED for v in space.choices[k]]
    size_keys = sorted({k for o in space.sizes.values() for k, v in o.items() if isinstance(v, (int, float))})
    names += [f"log2 {k}" for k in size_keys]
    names += ["log2 batch_size", "threads", "threads/cpus", "workers", "cpus"]
    names += sorted(k for k in hardware if k.startswith("flag_"))
    return names


def encode(space: SystemSpace, settings: list[Setting], hardware: list[dict]) -> np.ndarray:
    """The feature matrix of ``settings`` run on ``hardware`` (one dict per setting)."""
    names = _feature_names(space, hardware[0] if hardware else {})
    index = {n: i for i, n in enumerate(names)}
    x = np.zeros((len(settings), len(names)))
    for row, (s, hw) in enumerate(zip(settings, hardware, strict=True)):
        for k in _NAMED:
            col = index.get(f"{k}={s[k]}")
            if col is not None:
                x[row, col] = 1.0
        for k, v in space.sizes[s["model_size"]].items():
            if f"log2 {k}" in index:
                x[row, index[f"log2 {k}"]] = math.log2(max(float(v), 1e-9))
        cpus = int(hw.get("cpus") or 1)
        threads = cpus if s["threads"] == "all" else resolve_threads(s["threads"])
        x[row, index["log2 batch_size"]] = math.log2(s["batch_size"])
        x[row, index["threads"]] = threads
        x[row, index["threads/cpus"]] = threads / cpus
        x[row, index["workers"]] = s["workers"]
        x[row, index["cpus"]] = cpus
        for k, v in hw.items():
            if k in index:
                x[row, index[k]] = float(v)
    return x


@dataclass(frozen=True)
class Prediction:
    """Per setting: predicted samples/s and peak MB (geometric mean of the members) and the
    spread of log samples/s and log MB over the members."""

    samples_per_s: np.ndarray
    log_sps_std: np.ndarray
    peak_mb: np.ndarray
    log_mb_std: np.ndarray

    def memory_upper(self, z: float = 2.0) -> np.ndarray:
        """A pessimistic peak memory: ``z`` member spreads above the prediction."""
        return self.peak_mb * np.exp(z * self.log_mb_std)


class SpeedPredictor:
    """A bootstrap bag of gradient-boosted regressors for log samples/s and log peak memory."""

    def __init__(self, space: SystemSpace, members: int = 16, seed: int = 0, iterations: int = 150) -> None:
        if members < 2:
            raise ValueError(f"the predictor needs at least 2 members for an uncertainty, got {members}")
        self.space, self.members, self.seed, self.iterations = space, members, seed, iterations
        self.speed: list = []
        self.memory: list = []
        self.fingerprints: dict[str, int] = {}

    def fit(self, records: list[dict]) -> "SpeedPredictor":
        rows = usable(records)
        if len(rows) < 8:
            raise ValueError(f"the predictor needs at least 8 successful measurements, the history has {len(rows)}")
        hgb, limits = import_sklearn()
        x = encode(self.space, [r["setting"] for r in rows], [r["hardware"] for r in rows])
        y_sps = np.log([r["samples_per_s"] for r in rows])
        y_mb = np.log([max(r["peak_rss_mb"] or 1.0, 1.0) for r in rows])
        rng = np.random.default_rng(self.seed)
        self.speed, self.memory = [], []
        # A few hundred rows: one thread is fastest, and OpenMP threads beside a measurement or
        # another process on a small machine spin for nothing.
        with limits(limits=1):
            for m in range(self.members):
                idx = rng.integers(0, len(rows), len(rows))
                kw = dict(max_iter=self.iterations, learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=3,
                          random_state=self.seed + m)
                self.speed.append(hgb(**kw).fit(x[idx], y_sps[idx]))
                self.memory.append(hgb(**kw).fit(x[idx], y_mb[idx]))
        self.fingerprints = {}
        for r in rows:
            self.fingerprints[r["fingerprint"]] = self.fingerprints.get(r["fingerprint"], 0) + 1
        return self

    def predict(self, settings: list[Setting], hardware: dict) -> Prediction:
        if not self.speed:
            raise RuntimeError("fit the predictor first")
        x = encode(self.space, settings, [hardware] * len(settings))
        _, limits = import_sklearn()
        with limits(limits=1):
            sps = np.stack([m.predict(x) for m in self.speed])
            mb = np.stack([m.predict(x) for m in self.memory])
        return Prediction(np.exp(sps.mean(0)), sps.std(0), np.exp(mb.mean(0)), mb.std(0))


def cross_validated_spearman(space: SystemSpace, records: list[dict], folds: int = 5, seed: int = 0,
                             members: int = 16, iterations: int = 150) -> dict:
    """Spearman's rho between predicted and measured samples/s (and peak memory) on held-out
    settings: ``folds``-fold cross-validation over the successful records, by setting (repeated
    measurements of one setting stay in one fold). Per fold and pooled."""
    rows = usable(records)
    keys = sorted({r["key"] for r in rows})
    if len(keys) < max(8, 3 * folds):
        raise ValueError(f"held-out Spearman with {folds} folds needs at least {max(8, 3 * folds)} successful "
                         f"measurements of distinct settings, the history has {len(keys)}")
    random.Random(seed).shuffle(keys)
    fold_of = {k: i % folds for i, k in enumerate(keys)}
    per_fold, pred_sps, true_sps, pred_mb, true_mb = [], [], [], [], []
    for f in range(folds):
        train = [r for r in rows if fold_of[r["key"]] != f]
        test = [r for r in rows if fold_of[r["key"]] == f]
        if len(test) < 3:
            continue
        p = SpeedPredictor(space, members, seed + 1000 * f, iterations).fit(train)
        preds = [p.predict([r["setting"]], r["hardware"]) for r in test]  # each on its own hardware
        ps = [float(q.samples_per_s[0]) for q in preds]
        pm = [float(q.peak_mb[0]) for q in preds]
        ts, tm = [r["samples_per_s"] for r in test], [r["peak_rss_mb"] for r in test]
        per_fold.append({"fold": f, "n": len(test), "spearman_speed": spearman(ps, ts), "spearman_memory": spearman(pm, tm)})
        pred_sps += ps
        true_sps += ts
        pred_mb += pm
        true_mb += tm
    return {"folds": per_fold, "n": len(true_sps), "spearman_speed": spearman(pred_sps, true_sps),
            "spearman_memory": spearman(pred_mb, true_mb),
            "spearman_speed_fold_mean": float(np.mean([f["spearman_speed"] for f in per_fold])),
            "spearman_speed_fold_sd": float(np.std([f["spearman_speed"] for f in per_fold], ddof=1)) if len(per_fold) > 1 else 0.0}
