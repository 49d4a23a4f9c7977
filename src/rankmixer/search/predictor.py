"""The AutoML searcher's predictor: which of two architectures trains better, and what each costs,
learned from the trials a search has finished.

AutoML for large-capacity ranking (Yin et al. 2023, arXiv 2311.07870) searches with about 100
trials, so its predictor learns from few, noisy labels. It answers with three choices, which
this module follows:

* **a pairwise ranking loss**: the searcher needs the order of architectures, not their metric;
  ``softplus(-(s_i - s_j))`` over every pair of trials whose labels say i beats j
  (``loss="mse"`` regresses the standardized labels instead, for comparison);
* **an ensemble**: ``members`` small MLPs, each trained on a bootstrap resample of the trials
  from its own initialisation; the prediction is their mean (their spread is reported too);
* **multi-task**: one trunk, two heads, the ranking score and ``log FLOPs`` per sample
  (regressed, standardized), so the searcher can respect a FLOPs budget for architectures it
  never built.

An architecture enters as its encoding (:class:`Encoder`): the draws of the search space by
name, numbers scaled to [0, 1] within their range (logarithmically where the space says
``log``), choices one-hot, a draw the architecture does not make all zeros.

:func:`cross_validate` measures how well a predictor ranks trials it has not seen: Kendall's
tau-b between predicted scores and labels on each held-out fold.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rankmixer.core.rank_correlation import kendall_tau

__all__ = ["Decision", "Encoder", "Predictor", "cross_validate"]


@dataclasses.dataclass(frozen=True)
class Decision:
    """One named draw of a search space: ``options`` as the sampler sees them (Optuna-encoded
    choices, or a grid of numbers); ``numeric`` draws carry their range for scaling."""

    name: str
    options: tuple
    numeric: bool = False
    low: float = 0.0
    high: float = 1.0
    log: bool = False

    def scaled(self, value: float) -> float:
        """``value`` in [0, 1] within ``[low, high]`` (logarithmically for a log range)."""
        if self.high == self.low:
            return 0.0
        if self.log:
            return (math.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)


class Encoder:
    """Optuna parameter dicts (one architecture each) as fixed-length vectors."""

    def __init__(self, decisions: Sequence[Decision]) -> None:
        self.decisions = list(decisions)
        self.offsets, width = [], 0
        for d in self.decisions:
            self.offsets.append(width)
            width += 1 if d.numeric else len(d.options)
        self.width = width

    def encode(self, params: dict[str, Any]) -> np.ndarray:
        x = np.zeros(self.width, dtype=np.float32)
        for d, at in zip(self.decisions, self.offsets):
            if d.name not in params:
                continue
            value = params[d.name]
            if d.numeric:
                x[at] = d.scaled(float(value))
            elif value in d.options:
                x[at + d.options.index(value)] = 1.0
        return x

    def encode_all(self, params: Sequence[dict[str, Any]]) -> np.ndarray:
        return np.stack([self.encode(p) for p in params]) if params else np.zeros((0, self.width), np.float32)


class _Member(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.score = nn.Linear(hidden, 1)
        self.flops = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(x)
        return self.score(h)[:, 0], self.flops(h)[:, 0]


def pairwise_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean ``softplus(-(s_i - s_j))`` over the pairs with ``label_i > label_j`` (0 without any)."""
    better = (labels[:, None] > labels[None, :]).to(scores.dtype)
    margin = scores[:, None] - scores[None, :]
    return (nn.functional.softplus(-margin) * better).sum() / better.sum().clamp(min=1.0)


class Predictor:
    """An ensemble of ``members`` MLPs (two ReLU layers of ``hidden``) predicting a ranking score
    (higher = better label) and log FLOPs. ``loss``: ``pairwise`` or ``mse`` for the score."""

    def __init__(self, members: int = 5, hidden: int = 64, loss: str = "pairwise", epochs: int = 300,
                 lr: float = 1e-2, weight_decay: float = 1e-4, seed: int = 0) -> None:
        if loss not in ("pairwise", "mse"):
            raise ValueError(f"loss must be pairwise or mse, got {loss!r}")
        if members < 1 or hidden < 1 or epochs < 1:
            raise ValueError(f"members, hidden and epochs must be at least 1, got {members}, {hidden}, {epochs}")
        self.members, self.hidden, self.loss, self.epochs = members, hidden, loss, epochs
        self.lr, self.weight_decay, self.seed = lr, weight_decay, seed
        self.nets: list[_Member] = []
        self.flops_scale = (0.0, 1.0)

    def fit(self, x: np.ndarray, labels: np.ndarray, flops: np.ndarray | None = None) -> "Predictor":
        """Train every member on its bootstrap resample (the whole set when ``members`` is 1).
        ``flops``: FLOPs per sample of each trial (None: the FLOPs head is not trained)."""
        if len(x) < 2:
            raise ValueError(f"the predictor needs at least 2 trials, got {len(x)}")
        rng = np.random.default_rng(self.seed)
        xt = torch.as_tensor(x, dtype=torch.float32)
        y = torch.as_tensor(labels, dtype=torch.float32)
        y = (y - y.mean()) / (y.std() if len(y) > 1 and y.std() > 0 else 1.0)
        lf = None
        if flops is not None:
            logf = np.log(np.asarray(flops, dtype=np.float64) + 1.0)
            self.flops_scale = (float(logf.mean()), float(logf.std()) or 1.0)
            lf = torch.as_tensor((logf - self.flops_scale[0]) / self.flops_scale[1], dtype=torch.float32)
        self.nets = []
        for m in range(self.members):
            torch.manual_seed(self.seed * 1000 + m)
            net = _Member(x.shape[1], self.hidden)
            rows = torch.as_tensor(rng.integers(0, len(x), len(x)) if self.members > 1 else np.arange(len(x)))
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            for _ in range(self.epochs):
                opt.zero_grad()
                s, f = net(xt[rows])
                loss = pairwise_loss(s, y[rows]) if self.loss == "pairwise" else ((s - y[rows]) ** 2).mean()
                if lf is not None:
                    loss = loss + ((f - lf[rows]) ** 2).mean()
                loss.backward()
                opt.step()
            self.nets.append(net.eval())
        return self

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """``score`` (ensemble mean), ``spread`` (its standard deviation over members) and
        ``flops`` (predicted FLOPs per sample, the members' mean in log space)."""
        if not self.nets:
            raise RuntimeError("the predictor has not been fitted")
        with torch.no_grad():
            xt = torch.as_tensor(x, dtype=torch.float32)
            outs = [net(xt) for net in self.nets]
        s = torch.stack([o[0] for o in outs]).double()
        f = torch.stack([o[1] for o in outs]).double().mean(0) * self.flops_scale[1] + self.flops_scale[0]
        return {"score": s.mean(0).numpy(), "spread": s.std(0, unbiased=False).numpy(),
                "flops": (torch.exp(f) - 1.0).numpy()}


def cross_validate(x: np.ndarray, labels: np.ndarray, flops: np.ndarray | None = None, folds: int = 5,
                   seed: int = 0, **predictor: Any) -> dict:
    """``folds``-fold cross-validation: per held-out fold, Kendall's tau-b between the predicted
    scores and the labels (and between predicted and measured FLOPs); their means and the folds'
    values. ``predictor``: the :class:`Predictor`'s options."""
    n = len(x)
    if n < 2 * folds:
        raise ValueError(f"{folds}-fold cross-validation needs at least {2 * folds} trials, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    taus, flops_taus = [], []
    for k in range(folds):
        held = order[k::folds]
        kept = np.setdiff1d(order, held)
        model = Predictor(seed=seed, **predictor).fit(x[kept], labels[kept], None if flops is None else flops[kept])
        pred = model.predict(x[held])
        taus.append(kendall_tau(pred["score"], labels[held]))
        if flops is not None:
            flops_taus.append(kendall_tau(pred["flops"], flops[held]))
    out = {"folds": folds, "trials": n, "kendall": float(np.nanmean(taus)), "kendall_folds": taus}
    if flops is not None:
        out |= {"flops_kendall": float(np.nanmean(flops_taus)), "flops_kendall_folds": flops_taus}
    return out
