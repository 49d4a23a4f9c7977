"""Sentences -> padded tensors for the GTS model: word ids, lengths, mask and gold grids.

A batch is padded to its longest sentence, and a grid costs n^2 cells, so a batch of one long
and many short sentences is mostly padding. Training batches are therefore drawn from pools:
the shuffled split is cut into pools of ``pool`` batches, each pool is sorted by length and cut
into batches, and the batch order is shuffled (``pool=0``: plain shuffled batches, as the
reference code). Evaluation batches run in length order; a sentence's prediction does not
depend on its batch (padding is masked everywhere). Padding cells of the grid are ``IGNORE``
like the lower triangle, so the loss skips them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from rankmixer.text.aste import Sentence
from rankmixer.text.grid import IGNORE, Task, encode_grid
from rankmixer.text.vocab import Vocabulary

__all__ = ["GridBatch", "iterate_batches", "make_batch"]


@dataclass
class GridBatch:
    tokens: Tensor    # [B, n] word ids, 0 = padding
    lengths: Tensor   # [B] words per sentence (stays on the CPU, as packing wants it)
    mask: Tensor      # [B, n] 1.0 on words, 0.0 on padding
    tags: Tensor      # [B, n, n] gold tags, IGNORE below the diagonal and on padding
    index: list[int]  # position of each row in the split

    def to(self, device: torch.device | str) -> "GridBatch":
        return GridBatch(self.tokens.to(device), self.lengths, self.mask.to(device), self.tags.to(device), self.index)


def make_batch(sentences: Sequence[Sentence], index: Sequence[int], vocab: Vocabulary, task: Task) -> GridBatch:
    n = max(len(s.tokens) for s in sentences)
    tokens = np.zeros((len(sentences), n), dtype=np.int64)
    tags = np.full((len(sentences), n, n), IGNORE, dtype=np.int64)
    for b, s in enumerate(sentences):
        m = len(s.tokens)
        tokens[b, :m] = vocab.ids(s.tokens)
        tags[b, :m, :m] = encode_grid(m, s.triplets, task)
    lengths = torch.tensor([len(s.tokens) for s in sentences])
    mask = (torch.arange(n)[None, :] < lengths[:, None]).float()
    return GridBatch(torch.from_numpy(tokens), lengths, mask, torch.from_numpy(tags), list(index))


def iterate_batches(
    sentences: Sequence[Sentence], vocab: Vocabulary, task: Task, batch_size: int,
    generator: torch.Generator | None = None, pool: int = 0,
) -> Iterator[GridBatch]:
    """Batches in length order, or, given a ``generator``, shuffled from length-sorted pools of
    ``pool`` batches (0: no pools)."""
    def length(i: int) -> int:
        return len(sentences[i].tokens)

    if generator is None:
        groups = [sorted(range(len(sentences)), key=length)]
    else:
        order = torch.randperm(len(sentences), generator=generator).tolist()
        size = pool * batch_size if pool > 0 else len(order)
        groups = [sorted(order[s:s + size], key=length) if pool > 0 else order[s:s + size]
                  for s in range(0, len(order), size)]
    batches = [g[s:s + batch_size] for g in groups for s in range(0, len(g), batch_size)]
    if generator is not None and pool > 0:
        batches = [batches[k] for k in torch.randperm(len(batches), generator=generator).tolist()]
    for idx in batches:
        yield make_batch([sentences[i] for i in idx], idx, vocab, task)
