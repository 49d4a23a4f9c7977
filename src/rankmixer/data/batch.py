"""The Batch type: the one thing the loader hands to a model."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch
from torch import Tensor


@dataclass
class Batch:
    """Tensors for B examples. Column order follows the feature map's feature order.

    dense:     [B, n_dense] float32 normalised numerical features
    sparse:    [B, n_sparse] int64 ids (0 pad, 1 OOV)
    bags:      name -> [B, max_len] int64 ids, padded with 0 (unordered multi-valued features)
    sequences: name -> [B, max_len] int64 ids, oldest first, padded with 0 at the end
    labels:    [B, n_tasks] float32 in {0, 1}
    group:     [B] int64 group ids for gAUC, or None
    timestamp: [B] int64, or None
    teacher:   [B, n_tasks] float32 a teacher's predicted probabilities (external distillation),
               NaN where a row has none; None when the data has no teacher columns
    behaviours: name -> [B, max_len, n_fields] int64 ids of each behaviour's per-position fields
               (fields in the feature map's order), oldest first, padded with 0 at the end:
               position i holds a behaviour iff i < its length (every field of a real position
               is non-zero, a missing value being the OOV id 1)
    """

    dense: Tensor
    sparse: Tensor
    labels: Tensor
    bags: dict[str, Tensor] = field(default_factory=dict)
    sequences: dict[str, Tensor] = field(default_factory=dict)
    group: Tensor | None = None
    timestamp: Tensor | None = None
    behaviours: dict[str, Tensor] = field(default_factory=dict)
    teacher: Tensor | None = None

    def __len__(self) -> int:
        return self.labels.shape[0]

    def _map(self, fn) -> "Batch":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                v = fn(v)
            elif isinstance(v, dict):
                v = {k: fn(t) for k, t in v.items()}
            out[f.name] = v
        return Batch(**out)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        # DataLoader calls this on custom batch types when pin_memory=True.
        return self._map(lambda t: t.pin_memory())

    @staticmethod
    def lengths(padded: Tensor) -> Tensor:
        """Number of real (non-padding) ids per row of a padded bag or sequence; for a behaviour
        ``[B, L, F]`` its number of positions."""
        if padded.dim() == 3:
            padded = padded[..., 0]
        return (padded != 0).sum(dim=1)
