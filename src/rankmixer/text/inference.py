"""The GTS pair classifier with k rounds of feedback inference (Wu et al. 2020).

Round 0 classifies every cell from its pair feature z_ij = [h_i; h_j]: logits
L^0_ij = W_s z_ij + b_s. Each further round t = 1..k reads the current predictions
S^{t-1} = softmax(L^{t-1}) (the paper's equations; ``feedback="logits"`` uses L^{t-1} itself,
as the reference code does) and summarises them per word: p_i is the element-wise max of
S^{t-1} over row i and column i of the upper triangle (padding excluded). A cell's feature is
updated from its own prediction and both words' summaries, and classified again by the same
classifier:

    z^t_ij = W_q [z^{t-1}_ij; p_i; p_j; S^{t-1}_ij] + b_q,    L^t_ij = W_s z^t_ij + b_s

so that, say, a word that is confidently part of an aspect somewhere tells its other cells.
With k = 0 this is exactly the plain pair classifier.

**Computed factored, the same function.** Every map above is linear in z, so a cell's feature
is always a word term of i, a word term of j, and a linear map of the predictions fed back so
far: z^t_ij = l^t_i + r^t_j + G^t [S^0_ij; ...; S^{t-1}_ij] + c^t, with l^0_i = [h_i; 0],
r^0_j = [0; h_j], and each round

    l^t = W_z l^{t-1} + W_pi p,   r^t = W_z r^{t-1} + W_pj p,   c^t = W_z c^{t-1} + b_q,
    G^t = [W_z G^{t-1}, W_S]      (W_q = [W_z, W_pi, W_pj, W_S])

so L^t_ij = W_s l^t_i + W_s r^t_j + (W_s G^t) [S^0_ij; ...] + W_s c^t + b_s. The n^2 cells then
cost a few numbers each (the tags times the rounds) instead of a D x D product: the feature
grid [B, n, n, D] is never built (D = 2d: 200 for GTS-BiLSTM, 512 for GTS-CNN). The parameters
are the same two linear layers, so weights load either way; ``tests/text/test_model.py``
checks the outputs against the per-cell equations.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GridClassifier", "upper_mask", "word_summary"]


def upper_mask(mask: Tensor) -> Tensor:
    """[B, n] word mask -> [B, n, n] mask of the upper-triangle cells between real words."""
    return torch.triu(mask[:, :, None] * mask[:, None, :])


def word_summary(scores: Tensor, cells: Tensor) -> Tensor:
    """Per word, the max of ``scores`` [B, n, n, C] over its row and column among ``cells``
    [B, n, n] (other cells count as 0, as the reference multiplies by the mask) -> [B, n, C]."""
    s = scores * cells[..., None]
    return torch.maximum(s.amax(dim=2), s.amax(dim=1))


class GridClassifier(nn.Module):
    """Word representations [B, n, d] -> the grid's logits [B, n, n, tags] of every round,
    [round 0, ..., round k]; ``feature_dim`` is the pair feature's width, 2d."""

    def __init__(self, feature_dim: int, num_tags: int, rounds: int,
                 feedback: Literal["probs", "logits"] = "probs") -> None:
        super().__init__()
        self.rounds = rounds
        self.feedback = feedback
        self.num_tags = num_tags
        self.classifier = nn.Linear(feature_dim, num_tags)
        self.update = nn.Linear(feature_dim + 3 * num_tags, feature_dim) if rounds > 0 else None

    def _logits(self, left: Tensor, right: Tensor, const: Tensor, coef: Tensor | None, fed: Tensor | None) -> Tensor:
        """W_s z_ij + b_s for z_ij = left_i + right_j + coef . fed_ij + const."""
        w, b = self.classifier.weight, self.classifier.bias
        out = (left @ w.T)[:, :, None, :] + (right @ w.T)[:, None, :, :] + (const @ w.T + b)
        if coef is not None and fed is not None:
            out = out + fed @ (w @ coef).T
        return out

    def forward(self, h: Tensor, mask: Tensor) -> list[Tensor]:
        d = h.shape[-1]
        if 2 * d != self.classifier.in_features:
            raise ValueError(f"word representations of width {d}; this classifier reads pairs of width "
                             f"{self.classifier.in_features}")
        cells = upper_mask(mask)
        left, right = F.pad(h, (0, d)), F.pad(h, (d, 0))  # [h_i; 0] and [0; h_j]
        const = h.new_zeros(2 * d)
        coef: Tensor | None = None  # G^t: [D, tags * t]
        fed: Tensor | None = None   # [S^0; ...; S^{t-1}] per cell: [B, n, n, tags * t]
        logits = self._logits(left, right, const, coef, fed)
        out = [logits]
        c = self.num_tags
        for _ in range(self.rounds):
            scores = torch.softmax(logits, dim=-1) if self.feedback == "probs" else logits
            p = word_summary(scores, cells)  # [B, n, C]
            wq = self.update.weight  # type: ignore[union-attr]
            w_z, w_pi, w_pj, w_s = wq[:, :2 * d], wq[:, 2 * d:2 * d + c], wq[:, 2 * d + c:2 * d + 2 * c], wq[:, 2 * d + 2 * c:]
            left = left @ w_z.T + p @ w_pi.T
            right = right @ w_z.T + p @ w_pj.T
            const = const @ w_z.T + self.update.bias  # type: ignore[union-attr]
            coef = w_s if coef is None else torch.cat([w_z @ coef, w_s], dim=1)
            fed = scores if fed is None else torch.cat([fed, scores], dim=-1)
            logits = self._logits(left, right, const, coef, fed)
            out.append(logits)
        return out
