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
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["GridClassifier", "pair_features", "upper_mask", "word_summary"]


def pair_features(h: Tensor) -> Tensor:
    """[B, n, d] -> [B, n, n, 2d]: cell (i, j) is [h_i; h_j]."""
    n = h.shape[1]
    return torch.cat([h[:, :, None, :].expand(-1, -1, n, -1), h[:, None, :, :].expand(-1, n, -1, -1)], dim=-1)


def upper_mask(mask: Tensor) -> Tensor:
    """[B, n] word mask -> [B, n, n] mask of the upper-triangle cells between real words."""
    return torch.triu(mask[:, :, None] * mask[:, None, :])


def word_summary(scores: Tensor, cells: Tensor) -> Tensor:
    """Per word, the max of ``scores`` [B, n, n, C] over its row and column among ``cells``
    [B, n, n] (other cells count as 0, as the reference multiplies by the mask) -> [B, n, C]."""
    s = scores * cells[..., None]
    return torch.maximum(s.amax(dim=2), s.amax(dim=1))


class GridClassifier(nn.Module):
    """Pair features [B, n, n, D] -> logits of every round, [round 0, ..., round k]."""

    def __init__(self, feature_dim: int, num_tags: int, rounds: int,
                 feedback: Literal["probs", "logits"] = "probs") -> None:
        super().__init__()
        self.rounds = rounds
        self.feedback = feedback
        self.classifier = nn.Linear(feature_dim, num_tags)
        self.update = nn.Linear(feature_dim + 3 * num_tags, feature_dim) if rounds > 0 else None

    def forward(self, features: Tensor, mask: Tensor) -> list[Tensor]:
        cells = upper_mask(mask)
        n = features.shape[1]
        logits = self.classifier(features)
        out = [logits]
        for _ in range(self.rounds):
            scores = torch.softmax(logits, dim=-1) if self.feedback == "probs" else logits
            p = word_summary(scores, cells)  # [B, n, C]
            p_i = p[:, :, None, :].expand(-1, -1, n, -1)
            p_j = p[:, None, :, :].expand(-1, n, -1, -1)
            features = self.update(torch.cat([features, p_i, p_j, scores], dim=-1))
            logits = self.classifier(features)
            out.append(logits)
        return out
