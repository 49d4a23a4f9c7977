"""A behaviour of pages as a grid: ``[B, L, ...]`` positions -> ``[B, P, I, ...]`` pages x items.

A page behaviour (``rankmixer.data.datasets.impressions``) holds the exposures of the user's
last requests, oldest page first, each page's items in exposure order, and a page index per
position counted from the newest page (its ``sessions`` field: ``BehaviourInput.sessions``).
:func:`page_grid` puts page ``p`` (0 = newest) in row ``P - 1 - p`` of the grid (oldest first,
newest last) and its ``j``-th item in column ``j``; positions of pages ``>= P`` or beyond the
``I``-th item of their page are left out. A scatter, as in MoS's ``left_align``, so it exports.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["page_grid"]


def page_grid(values: Tensor, mask: Tensor, pages: Tensor, num_pages: int, page_size: int) -> tuple[Tensor, Tensor]:
    """``values [B, L, ...]`` (pads anywhere after the real positions), ``mask [B, L]``,
    ``pages [B, L]`` (page index from the newest; any value at pads) -> ``(grid [B, P, I, ...],
    grid_mask [B, P, I])``."""
    B, L = mask.shape
    idx = torch.arange(L, device=mask.device).expand(B, L)
    # A page's first position is the number of real positions of older pages before it (pages
    # are contiguous, oldest first), so an item's slot is its position minus that count: an
    # [L, L] comparison (L = P * I is small), where a running maximum would not export to ONNX.
    older = (mask.unsqueeze(1) & (pages.unsqueeze(1) > pages.unsqueeze(2))).sum(-1)
    slot = idx - older
    keep = mask & (pages >= 0) & (pages < num_pages) & (slot < page_size)
    dump = num_pages * page_size  # one extra cell that takes every position left out
    cell = torch.where(keep, (num_pages - 1 - pages) * page_size + slot, torch.full_like(idx, dump))
    extra = values.shape[2:]
    index = cell.view(B, L, *([1] * len(extra))).expand_as(values)
    grid = values.new_zeros(B, dump + 1, *extra).scatter(1, index, values * keep.view(B, L, *([1] * len(extra))).to(values.dtype))
    grid_mask = torch.zeros(B, dump + 1, dtype=torch.bool, device=mask.device).scatter(1, cell, keep)
    return grid[:, :dump].reshape(B, num_pages, page_size, *extra), grid_mask[:, :dump].reshape(B, num_pages, page_size)
