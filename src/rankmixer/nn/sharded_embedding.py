"""The distributed twin of :class:`~rankmixer.nn.embedding.FeatureEmbedding`: TorchRec tables.

This is the one place where the embedding module is switched: :func:`swap_embeddings` replaces
every ``FeatureEmbedding`` inside a built model by a :class:`TorchRecFeatureEmbedding` with the
same interface (``forward(batch) -> EmbeddedFeatures``, same ``field_names``, same values), so no
model changes between single-process and distributed runs. TorchRec's
``DistributedModelParallel`` then shards the ``EmbeddingCollection`` inside it across ranks.

Why an ``EmbeddingCollection`` (unpooled) for everything: a sequence and a sparse feature may
share one table (``share_with``), and only an unpooled collection can serve both; pooling is then
done here, with the same rules as ``FeatureEmbedding`` (pad ids dropped, masked mean).

Tables: one TorchRec table per table of the feature map, ``vocab_size`` rows, row 0 never looked
up (pad ids are dropped from the jagged input, so they give the zero vector exactly as the fused
pad row does). The numerical-field vectors are one more table, ``__numeric__``, with
``n_dense + 1`` rows, looked up with ids ``1..n_dense`` for every example: that way every
embedding parameter is trained by the same fused optimizer, as in the single-process run where
the numerical vectors are rows of the fused weight.

Canonical layout: checkpoints always hold the *single-process* layout (the fused ``weight`` of
``FeatureEmbedding``). :meth:`TorchRecFeatureEmbedding.segments` says which rows of the fused
weight each TorchRec table holds; ``train/distributed.py`` uses it to gather and scatter.

TorchRec is optional: it is imported when this module's classes are built, never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.nn.embedding import PAD_ROW, EmbeddedFeatures, FeatureEmbedding, join_fields, masked_mean

NUMERIC_TABLE = "__numeric__"


def torchrec_available() -> tuple[bool, str]:
    """(importable, why not). fbgemm-gpu-cpu must match torch exactly, so an import error is
    common and worth reporting as it is."""
    try:
        import torchrec  # noqa: F401
        from torchrec.distributed import DistributedModelParallel  # noqa: F401
    except Exception as e:  # ImportError, OSError (undefined symbol in fbgemm), ...
        return False, f"{type(e).__name__}: {e}"
    return True, ""


@dataclass(frozen=True)
class Segment:
    """TorchRec table ``table`` rows ``1 .. rows - 1`` are fused rows ``offset + 1 .. offset + rows - 1``."""

    table: str
    offset: int
    rows: int


class TorchRecFeatureEmbedding(nn.Module):
    """Same interface and values as the ``FeatureEmbedding`` it is built from; tables in a
    TorchRec ``EmbeddingCollection`` (built on CPU with the source's weights copied in)."""

    def __init__(self, source: FeatureEmbedding) -> None:
        super().__init__()
        if source.behaviour_names:
            raise ValueError(
                f"sharded (TorchRec) embeddings do not hold behaviour sequences yet "
                f"({source.behaviour_names}); train models on behaviour data with train.embeddings=ddp"
            )
        from torchrec import EmbeddingCollection, EmbeddingConfig

        self.dim = source.dim
        # fbgemm's kernels need a width that is a multiple of 4 (DeepFM's first-order and LR's
        # tables are 1 wide): such tables are stored wider, the extra columns are never read, get
        # no gradient and stay zero.
        self.store_dim = -(-source.dim // 4) * 4
        self.numeric_as_field = source.numeric_as_field
        self.field_names = list(source.field_names)
        self.sparse_names = list(source.sparse_names)
        self.dense_names = list(source.dense_names)
        self.bag_names = list(source.bag_names)
        self.sequence_names = list(source.sequence_names)
        self.num_rows = source.num_rows  # rows of the fused weight this module stands for
        self.n_numeric = int(source.numeric_rows.shape[0])

        users: dict[str, list[str]] = {t: [] for t in source.table_offsets}
        for name in self.sparse_names + self.bag_names + self.sequence_names:
            users[source.feature_table[name]].append(name)
        self._segments = [Segment(t, source.table_offsets[t], source.table_rows[t]) for t in source.table_offsets]
        configs = [
            EmbeddingConfig(name=t, embedding_dim=self.store_dim, num_embeddings=source.table_rows[t], feature_names=users[t])
            for t in source.table_offsets
            if users[t]
        ]
        if self.n_numeric:
            self._segments.append(Segment(NUMERIC_TABLE, source.numeric_offset - 1, self.n_numeric + 1))
            configs.append(EmbeddingConfig(name=NUMERIC_TABLE, embedding_dim=self.store_dim,
                                           num_embeddings=self.n_numeric + 1, feature_names=[NUMERIC_TABLE]))
        # A table no feature uses cannot be built by TorchRec (and is never trained): kept out.
        self._segments = [s for s in self._segments if s.table == NUMERIC_TABLE or users[s.table]]
        self.table_names = [c.name for c in configs]
        self.keys = [n for c in configs for n in c.feature_names]
        self.ec = EmbeddingCollection(tables=configs, device=torch.device("cpu"))
        self.load_fused_weight(source.weight.detach())

    # ---- the canonical (single-process) layout -----------------------------------------------
    def segments(self) -> list[Segment]:
        return list(self._segments)

    def load_fused_weight(self, fused: Tensor) -> None:
        """Copy a ``FeatureEmbedding`` fused weight into the (unsharded) tables."""
        with torch.no_grad():
            for s in self._segments:
                w = self.ec.embeddings[s.table].weight
                w.zero_()
                w[1:, : self.dim].copy_(fused[s.offset + 1 : s.offset + s.rows])

    # ---- lookup ------------------------------------------------------------------------------
    def _jagged_input(self, batch: Batch):
        from torchrec import KeyedJaggedTensor

        B = batch.sparse.shape[0]
        values, lengths = [], []
        for key in self.keys:
            if key == NUMERIC_TABLE:
                ids = torch.arange(1, self.n_numeric + 1, device=batch.dense.device).expand(B, -1)
            elif key in self.bag_names:
                ids = batch.bags[key]
            elif key in self.sequence_names:
                ids = batch.sequences[key]
            else:
                ids = batch.sparse[:, self.sparse_names.index(key)].unsqueeze(1)
            mask = ids != 0
            values.append(ids[mask])  # row-major: each example's ids in order
            lengths.append(mask.sum(dim=1))
        return KeyedJaggedTensor(keys=self.keys, values=torch.cat(values), lengths=torch.cat(lengths).to(torch.int64))

    def forward(self, batch: Batch) -> EmbeddedFeatures:
        B = batch.sparse.shape[0]
        out = self.ec(self._jagged_input(batch))

        def values(key: str) -> Tensor:
            v = out[key].values()
            return v if self.store_dim == self.dim else v[:, : self.dim]

        def padded(ids: Tensor, key: str) -> Tensor:
            """[B, L, dim] with the looked-up vectors at the non-pad slots, zeros elsewhere."""
            mask = ids != 0
            flat = torch.zeros(ids.numel(), self.dim, dtype=torch.float32, device=ids.device)
            flat = flat.index_put((mask.flatten().nonzero().squeeze(1),), values(key))
            return flat.view(*ids.shape, self.dim)

        parts: list[Tensor] = []
        if self.sparse_names:
            parts.append(torch.cat([padded(batch.sparse[:, i : i + 1], n) for i, n in enumerate(self.sparse_names)], dim=1))
        if self.n_numeric:
            num = values(NUMERIC_TABLE).view(B, self.n_numeric, self.dim)
            parts.append(num * batch.dense.unsqueeze(-1).to(num.dtype))
        for name in self.bag_names:
            ids = batch.bags[name]
            parts.append(masked_mean(padded(ids, name), ids != 0).unsqueeze(1))
        sequences: dict[str, tuple[Tensor, Tensor]] = {}
        for name in self.sequence_names:
            ids = batch.sequences[name]
            mask = ids != 0
            emb = padded(ids, name)
            sequences[name] = (emb, mask)
            parts.append(masked_mean(emb, mask).unsqueeze(1))
        fields = join_fields(parts, batch.dense, B, self.dim)
        return EmbeddedFeatures(fields=fields, field_names=list(self.field_names), dense=batch.dense, sequences=sequences)

    def extra_repr(self) -> str:
        return f"tables={len(self.table_names)}, rows={self.num_rows}, dim={self.dim}, fields={len(self.field_names)}"


def swap_embeddings(model: nn.Module) -> dict[str, TorchRecFeatureEmbedding]:
    """Replace every ``FeatureEmbedding`` in ``model`` (in place) by a TorchRec twin holding the
    same weights. Returns {module path: new module}, in ``model.modules()`` order, which is the
    order in which ``split_parameters`` hands the fused weights to the sparse optimizer."""
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, FeatureEmbedding)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no FeatureEmbedding to shard")
    swapped: dict[str, TorchRecFeatureEmbedding] = {}
    for name, m in found:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        twin = TorchRecFeatureEmbedding(m)
        setattr(parent, attr, twin)
        swapped[name] = twin
    return swapped


__all__ = ["TorchRecFeatureEmbedding", "Segment", "swap_embeddings", "torchrec_available", "NUMERIC_TABLE", "PAD_ROW"]
