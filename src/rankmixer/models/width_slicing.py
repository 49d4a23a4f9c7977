"""Width slicing: supernet candidates of one block type that differ only in one size share the
weights of the largest of them, each using the leading slice (as in slimmable networks and the
one-shot searches that share weights between widths).

The sliced size per type (:data:`SLICED`): an MLP's ``width`` (every hidden layer), a gating
block's hidden ``width``, a compress block's output ``width`` (entities) and a low-rank cross
block's ``rank``. Candidates of that type whose other sizes are equal form a group; the one with
the largest sliced size owns the weights. A narrower member is its own block built on the meta
device (a template: its shapes and its forward, no storage) and run with
``torch.func.functional_call`` on the owner's parameters cut to the template's shapes: for every
parameter, the leading ``shape[d]`` entries of each dimension ``d``. For an MLP of width 64 inside
one of 256 that is the first 64 units of every layer; for a rank-8 cross layer inside a rank-32
one, the first 8 rank components; for a compress block, the first output entities. Its gradients
therefore reach only that slice.

Attention and RankMixer blocks are not sliced: their widths split into heads or tokens, where a
leading slice is not the same block made narrower.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

__all__ = ["SLICED", "LeadingSlice", "meta_copy", "slice_owners"]

SLICED: dict[str, str] = {"mlp": "width", "gating": "width", "compress": "width", "cross": "rank"}


def slice_owners(candidates: list[dict[str, Any]]) -> list[int]:
    """For each candidate, the index of the candidate whose weights it runs on: the member of its
    group (same type, same sizes except the sliced one) with the largest sliced size; itself when
    it has no group (a type or a size not sliced, a full-rank cross block)."""
    groups: dict[tuple, list[int]] = {}
    for k, c in enumerate(candidates):
        size = SLICED.get(c["type"])
        if size is None or c.get(size) is None:
            continue
        key = (c["type"], tuple(sorted((n, repr(v)) for n, v in c.items() if n not in ("type", size))))
        groups.setdefault(key, []).append(k)
    owners = list(range(len(candidates)))
    for members in groups.values():
        size = SLICED[candidates[members[0]]["type"]]
        top = max(members, key=lambda k: (candidates[k][size], -k))
        for k in members:
            owners[k] = top
    return owners


class LeadingSlice:
    """A narrower module (``template``, built on the meta device) run on the leading slices of
    ``owner``'s parameters. It is not an ``nn.Module``, so it adds no parameters of its own, and
    the owner's parameters are read at each call (they follow the owner's device and updates)."""

    def __init__(self, template: nn.Module, owner: nn.Module, where: str) -> None:
        self.template = template
        wide = dict(owner.named_parameters())
        self.cuts: dict[str, tuple[slice, ...]] = {}
        for name, p in template.named_parameters():
            if name not in wide or wide[name].dim() != p.dim() or any(a > b for a, b in zip(p.shape, wide[name].shape)):
                raise ValueError(f"{where}: parameter {name} {tuple(p.shape)} is not a leading slice of its owner's "
                                 f"{tuple(wide[name].shape) if name in wide else '(absent)'}")
            self.cuts[name] = tuple(slice(0, s) for s in p.shape)
        self.owner = [owner]  # in a list: not registered anywhere as a submodule

    def __call__(self, *args: Any) -> Tensor:
        owner = self.owner[0]
        wide = dict(owner.named_parameters())
        params = {name: wide[name][cut] for name, cut in self.cuts.items()}
        self.template.train(owner.training)
        return functional_call(self.template, params, args)


def meta_copy(build) -> nn.Module:
    """``build()`` on the meta device: a module with shapes and a forward, and no storage."""
    with torch.device("meta"):
        return build()
