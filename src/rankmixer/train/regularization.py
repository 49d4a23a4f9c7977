"""L2 penalties added to the training loss: ``train.regularization`` (FuxiCTR's
``embedding_regularizer`` and ``net_regularizer``).

Which parameters are embeddings is decided as the optimizers decide it
(``nn.embedding.split_parameters``): every :class:`FeatureEmbedding` and every plain
``nn.Embedding``; everything else is dense. The trainer knows nothing more about the model.

* ``dense_l2`` (FuxiCTR's net_regularizer): ``dense_l2 / 2 * ||p||^2`` summed over every trainable
  non-embedding parameter, biases and normalisation weights included, as FuxiCTR does.
* ``embedding_l2`` with ``embedding_scope: table`` (FuxiCTR's embedding_regularizer):
  ``embedding_l2 / 2 * ||W||^2`` over every table, every step, whichever rows the batch used.
  Its gradient touches every row, so it cannot go with sparse gradients.
* ``embedding_l2`` with ``embedding_scope: looked_up``: ``embedding_l2 / 2 * sum ||e||^2 / B``,
  the sum running over every embedding vector the batch of ``B`` rows looked up, once per
  occurrence (an id in two rows, or twice in a bag, counts twice; padding never). Why this one:
  it is the batch estimate of ``embedding_l2 / 2 * E_row[sum of the row's squared embedding
  norms]``, so its strength does not change with the batch size, and a row's gradient,
  ``embedding_l2 * (occurrences / B) * W[row]``, is proportional to how often the row is used:
  rare ids are shrunk rarely, not on every step as the table penalty does. It reaches only the
  looked-up rows, sparse gradients included.

How ``looked_up`` sees the lookups without the trainer knowing the model: forward hooks on the
embedding modules record, while a training forward runs (:meth:`Regularizer.recording`), the
squared norms of the vectors they looked up. For an ``nn.Embedding`` that is its output (the
gradient goes back through the lookup the model already made); for a :class:`FeatureEmbedding`,
whose output is pooled and scaled, the hook looks the batch's rows up once more (numeric-field
vectors count once per row, like an id).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.nn.embedding import PAD_ROW, FeatureEmbedding, split_parameters
from rankmixer.train.config import RegularizationConfig

__all__ = ["Regularizer", "looked_up_rows"]


def looked_up_rows(emb: FeatureEmbedding, batch: Batch) -> Tensor:
    """Every row of ``emb.weight`` that ``emb(batch)`` reads, once per occurrence, flattened
    (padding rows included: the caller masks them)."""
    B = batch.sparse.shape[0]
    parts = [emb.global_ids(name, batch.sparse[:, i]) for i, name in enumerate(emb.sparse_names)]
    if emb.numeric_rows.numel():
        parts.append(emb.numeric_rows.expand(B, -1))
    parts += [emb.global_ids(name, batch.bags[name]) for name in emb.bag_names]
    parts += [emb.global_ids(name, batch.sequences[name]) for name in emb.sequence_names]
    if not parts:
        return batch.sparse.new_zeros(0)
    return torch.cat([p.reshape(-1) for p in parts])


class Regularizer:
    """The penalty of one training step. Build it before wrapping the model; call
    :meth:`penalty` after each training forward run inside :meth:`recording`."""

    def __init__(self, model: nn.Module, cfg: RegularizationConfig) -> None:
        self.cfg = cfg
        emb, dense = split_parameters(model)
        self.table_params = [p for p in emb if p.requires_grad] if cfg.embedding_l2 and cfg.embedding_scope == "table" else []
        self.dense_params = [p for p in dense if p.requires_grad] if cfg.dense_l2 else []
        self.looked_up = bool(cfg.embedding_l2) and cfg.embedding_scope == "looked_up"
        self.active = bool(cfg.embedding_l2 or cfg.dense_l2)
        self._recording = False
        self._sq_sum: Tensor | None = None  # sum of squared norms of the looked-up vectors so far
        self._handles = []
        if self.looked_up:
            for m in model.modules():
                if isinstance(m, FeatureEmbedding):
                    self._handles.append(m.register_forward_hook(self._feature_embedding_hook, with_kwargs=True))
                elif isinstance(m, nn.Embedding):
                    self._handles.append(m.register_forward_hook(self._embedding_hook))

    # ---- hooks: they add to the running sum only while recording -----------------------------
    def _add(self, sq: Tensor) -> None:
        self._sq_sum = sq if self._sq_sum is None else self._sq_sum + sq

    def _embedding_hook(self, module: nn.Embedding, args: tuple, output: Tensor) -> None:
        if not self._recording:
            return
        sq = output.pow(2).sum(-1)
        if module.padding_idx is not None:
            sq = sq * (args[0] != module.padding_idx)
        self._add(sq.sum())

    def _feature_embedding_hook(self, module: FeatureEmbedding, args: tuple, kwargs: dict, output) -> None:
        if not self._recording:
            return
        batch = args[0] if args else kwargs["batch"]
        rows = looked_up_rows(module, batch)
        vectors = F.embedding(rows, module.weight, padding_idx=PAD_ROW, sparse=module.sparse)
        self._add((vectors.pow(2).sum(-1) * (rows != PAD_ROW)).sum())

    # ---- the step --------------------------------------------------------------------------
    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Lookups inside this block count towards the next :meth:`penalty`."""
        self._sq_sum, self._recording = None, True
        try:
            yield
        finally:
            self._recording = False

    def penalty(self, batch_size: int) -> Tensor | None:
        """The step's penalty (None when regularisation is off). ``batch_size``: rows of the
        batch that was recorded (this process's share under torchrun; DDP's gradient mean over
        ranks then gives the global batch's penalty)."""
        if not self.active:
            return None
        terms: list[Tensor] = []
        if self.looked_up and self._sq_sum is not None:
            terms.append(self.cfg.embedding_l2 / 2 * self._sq_sum / batch_size)
        if self.table_params:
            terms.append(self.cfg.embedding_l2 / 2 * sum(p.pow(2).sum() for p in self.table_params))
        if self.dense_params:
            terms.append(self.cfg.dense_l2 / 2 * sum(p.pow(2).sum() for p in self.dense_params))
        self._sq_sum = None
        return sum(terms) if terms else None

    def remove(self) -> None:
        """Detach the hooks from the model."""
        for h in self._handles:
            h.remove()
        self._handles = []
