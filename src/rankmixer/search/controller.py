"""A REINFORCE controller: independent categorical decisions, each a softmax over its options,
moved by the policy gradient ``sum_j (r_j - mean r) * grad log pi(sample_j)`` (the mean reward
of a draw is the variance-reducing baseline)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["Controller"]


class Controller:
    """Independent categorical choices (decisions), ``softmax(theta[i])`` over the options
    decision ``i`` allows (the others masked): one per choice block of a supernet (Rankitect),
    or one per named draw of a search space (the AutoML searcher)."""

    def __init__(self, allowed: list[list[int]], candidates: int, lr: float, generator: torch.Generator) -> None:
        self.mask = torch.ones(len(allowed), candidates, dtype=torch.bool)
        for i, ks in enumerate(allowed):
            self.mask[i, ks] = False
        self.theta = torch.zeros(len(allowed), candidates, dtype=torch.float64)
        self.lr, self.generator = lr, generator

    @property
    def theta(self) -> Tensor:
        return self._theta

    @theta.setter
    def theta(self, value: Tensor) -> None:
        self._theta = value
        self._probs: Tensor | None = None  # softmax(theta), computed when first needed

    def probs(self) -> Tensor:
        if self._probs is None:
            self._probs = torch.softmax(self.theta.masked_fill(self.mask, float("-inf")), dim=1)
        return self._probs

    def draw(self, i: int) -> int:
        """One option of decision ``i``, drawn from its softmax."""
        return int(torch.multinomial(self.probs()[i], 1, generator=self.generator))

    def sample(self, n: int) -> list[list[int]]:
        """``n`` draws of every decision."""
        return [[self.draw(i) for i in range(len(self.theta))] for _ in range(n)]

    def best(self) -> list[int]:
        return [int(k) for k in self.probs().argmax(dim=1)]

    def entropy(self) -> float:
        p = self.probs()
        return float(-(p[p > 0] * p[p > 0].log()).sum())

    def step(self, paths: list[list[int | None]], rewards: list[float]) -> None:
        """One REINFORCE ascent step; the gradient of log pi(path) for decision i is
        ``onehot(path[i]) - softmax(theta[i])``. A ``None`` entry is a decision the sample did
        not take (a block it does not have): it does not enter log pi."""
        r = np.asarray(rewards, dtype=np.float64)
        advantage = r - r.mean()
        p = self.probs()
        grad = torch.zeros_like(self.theta)
        for path, a in zip(paths, advantage):
            for i, k in enumerate(path):
                if k is None:
                    continue
                grad[i] -= a * p[i]
                grad[i, k] += a
        self.theta = self.theta + self.lr * grad.masked_fill(self.mask, 0.0)
