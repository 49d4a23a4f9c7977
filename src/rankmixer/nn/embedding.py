"""All embedding tables of a model, fused into one weight.

:class:`FeatureEmbedding` is the *only* module that owns embedding tables. It knows the feature
map and nothing about any backbone: it turns a :class:`~rankmixer.data.batch.Batch` into
:class:`EmbeddedFeatures` (one ``[B, F, dim]`` tensor of fields plus the unpooled sequences).
A distributed version (TorchRec sharded tables) can replace it without touching any model.

Layout: every table of ``feature_map.tables()`` is a row range of one ``[rows, dim]`` parameter,
so a lookup of every field is one ``F.embedding`` call (one kernel instead of one per field).
Row 0 is the single shared padding row; table ``t`` keeps its ids ``1 .. vocab_size - 1`` at
rows ``offset[t] + 1 ..``, i.e. ``global = id + offset[t]`` for ``id != 0`` and ``0`` for
padding. With ``numeric_as_field`` the learned vectors of the numerical fields are the last
``n_dense`` rows, so the module's parameters are exactly the fused table (a trainer may give all
of it to a sparse optimizer).

Padding: row 0 starts at zero and every lookup passes ``padding_idx=0``, so it never receives a
gradient and stays zero; pooled bags and sequences divide by their number of non-pad ids.

Ids must lie in ``[0, vocab_size)`` of their table (the data pipeline guarantees it); an id past
the end would read the next table's rows, so :meth:`FeatureEmbedding.check_ids` exists for tests
and debugging (not called in ``forward``: it would sync the device).

Behaviour sequences (``Batch.behaviours``): :meth:`FeatureEmbedding.behaviours` gives their
unpooled ``[B, L, F, dim]`` vectors (each per-position field looked up in its own table, or in the
table of the feature it shares, e.g. the candidate item's) to a model that encodes them itself
(DIN, RankMixer's sequence module...), which builds its embedding with ``pool_behaviours=False``.
For every other model (``pool_behaviours=True``, the default) each per-position field of a
behaviour also becomes a field ``<behaviour>.<field>``, its masked mean over the real positions,
after the sequences: a model that knows nothing of behaviours still sees them, mean-pooled.

Initialisation: ``normal(0, 1e-2)`` for every row but the pad row: small, so initial dot
products and FM terms are about 0 and logits start near the bias (FuxiCTR uses std 1e-4; DLRM's
reference uniform(+-1/sqrt(rows))).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap

PAD_ROW = 0


def masked_mean(emb: Tensor, mask: Tensor) -> Tensor:
    """Mean over dim 1 of ``emb [B, L, dim]`` whose pad slots are already zero, counting the
    ``mask [B, L]`` slots (an all-pad row gives zeros): ``[B, dim]``. Shared with the TorchRec
    twin in ``sharded_embedding.py`` so both pool exactly alike."""
    count = mask.sum(dim=1, keepdim=True).clamp_min(1).to(emb.dtype)
    return emb.sum(dim=1) / count


def join_fields(parts: list[Tensor], like: Tensor, batch_size: int, dim: int) -> Tensor:
    """The ``[B, n, dim]`` field parts concatenated along dim 1 (``[B, 0, dim]`` shaped like
    ``like`` when there are none)."""
    if not parts:
        return like.new_zeros(batch_size, 0, dim)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


@dataclass
class EmbeddedFeatures:
    """What :class:`FeatureEmbedding` hands to a backbone.

    fields:      [B, F, dim]: sparse fields, then numerical fields (if numeric_as_field),
                 then bags mean-pooled, then sequences mean-pooled (pad ids excluded)
    field_names: the F feature names, in that order
    dense:       [B, n_dense] the raw normalised numerical values
    sequences:   name -> (emb [B, L, dim], mask [B, L] bool, True = real id); pad slots of emb
                 are zero
    """

    fields: Tensor
    field_names: list[str]
    dense: Tensor
    sequences: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)

    @property
    def num_fields(self) -> int:
        return self.fields.shape[1]

    def flat(self) -> Tensor:
        """fields flattened to [B, F * dim]."""
        return self.fields.flatten(1)


class FeatureEmbedding(nn.Module):
    """Every embedding table of a feature map, as row ranges of one fused weight.

    Args:
        feature_map: the prepared data's feature map.
        dim: embedding width of every table.
        sparse: lookups produce sparse gradients for the fused weight (for torch.optim.SparseAdam
            / Adagrad). A plain attribute read at forward time, so a trainer may flip it after
            the model is built.
        numeric_as_field: add one learned ``dim`` vector per numerical feature, multiplied by the
            feature's value, as a field (FuxiCTR style).
        init_std: std of the normal initialisation of all rows except the pad row.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        dim: int,
        sparse: bool = False,
        numeric_as_field: bool = True,
        init_std: float = 1e-2,
        pool_behaviours: bool = True,
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"embedding dim must be >= 1, got {dim}")
        self.dim = dim
        self.sparse = sparse
        self.numeric_as_field = numeric_as_field
        self.init_std = init_std

        tables = feature_map.tables()
        for name, rows in tables.items():
            if rows < 2:
                raise ValueError(f"table {name!r} has {rows} rows; every table needs pad and OOV rows (>= 2)")
        # Row offsets: global row = id + offset for id != 0 (see the module docstring).
        self.table_offsets: dict[str, int] = {}
        self.table_rows: dict[str, int] = dict(tables)
        next_row = 1
        for name, rows in tables.items():
            self.table_offsets[name] = next_row - 1
            next_row += rows - 1

        self.sparse_names = [f.name for f in feature_map.sparse]
        self.dense_names = [f.name for f in feature_map.dense]
        self.bag_names = [f.name for f in feature_map.bags]
        self.sequence_names = [f.name for f in feature_map.sequences]
        for f in feature_map.bags + feature_map.sequences:
            if f.table not in self.table_offsets:
                raise ValueError(f"feature {f.name!r} shares table {f.table!r}, which is not a table of the feature map")
        self.numeric_offset = next_row
        n_numeric_rows = len(self.dense_names) if numeric_as_field else 0
        self.num_rows = next_row + n_numeric_rows

        self.field_names = (
            self.sparse_names
            + (self.dense_names if numeric_as_field else [])
            + self.bag_names
            + self.sequence_names
        )
        self.pool_behaviours = pool_behaviours
        if pool_behaviours:
            self.field_names += [f"{f.name}.{b.name}" for f in feature_map.behaviours for b in f.fields]

        def offsets_of(names: list[str]) -> Tensor:
            return torch.tensor(
                [self.table_offsets[feature_map.feature(n).table] for n in names], dtype=torch.long
            )

        # Buffers (non-persistent: they follow from the feature map) so .to(device) moves them.
        self.register_buffer("sparse_offsets", offsets_of(self.sparse_names), persistent=False)
        self.register_buffer(
            "numeric_rows",
            torch.arange(self.numeric_offset, self.numeric_offset + n_numeric_rows, dtype=torch.long),
            persistent=False,
        )
        # feature name -> the table it looks up (itself, or the sparse feature it shares with);
        # a behaviour has one table per field, not one of its own (see the module docstring).
        self.feature_table: dict[str, str] = {
            f.name: f.table for f in feature_map.features if f.kind not in ("dense", "behaviour")
        }
        self._offset_of: dict[str, int] = {
            n: self.table_offsets[self.feature_table[n]] for n in self.bag_names + self.sequence_names
        }

        # Behaviours: per field the offset of the table it looks up ([F] per behaviour).
        self.behaviour_names = [f.name for f in feature_map.behaviours]
        self.behaviour_fields: dict[str, list] = {f.name: list(f.fields) for f in feature_map.behaviours}
        for f in feature_map.behaviours:
            self.register_buffer(f"behaviour_offsets_{f.name}",
                                 torch.tensor([self.table_offsets[b.table] for b in f.fields], dtype=torch.long),
                                 persistent=False)

        self.weight = nn.Parameter(torch.empty(self.num_rows, dim))
        self.reset_parameters()
        # Bags pool with the fused embedding_bag kernel. Export to ONNX sets this to False: the
        # exporter turns embedding_bag into a per-row Loop, slow in ONNX Runtime, while a
        # lookup + masked mean (the same mean) exports to plain Gather/ReduceSum.
        self.fused_bags = True

    # ---- parameters -------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.normal_(0.0, self.init_std)
            self.weight[PAD_ROW].zero_()

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The embedding tables (here: the one fused weight). These are all of the module's
        parameters, so ``split_parameters`` can separate a model's parameters by module type."""
        return [self.weight]

    def table_weight(self, name: str) -> Tensor:
        """Table ``name`` as a ``[vocab_size, dim]`` tensor (row 0 = the shared pad row); a copy
        for inspection and export, not a view that can be trained."""
        off, rows = self.table_offsets[name], self.table_rows[name]
        return torch.cat([self.weight[PAD_ROW : PAD_ROW + 1], self.weight[off + 1 : off + rows]], dim=0)

    def numeric_weight(self) -> Tensor:
        """[n_dense, dim] learned vectors of the numerical fields (empty without numeric_as_field)."""
        return self.weight[self.numeric_offset :]

    # ---- lookup -----------------------------------------------------------------------------
    @staticmethod
    def _globalise(ids: Tensor, offset: Tensor | int) -> Tensor:
        # id 0 (pad) -> row 0; anything else -> id + offset. ids are >= 0, so a multiply by the
        # non-pad mask does it without a branch.
        return ids + offset * (ids != 0)

    def global_ids(self, name: str, ids: Tensor) -> Tensor:
        """Rows of the fused weight for the local ids of feature ``name`` (any kind but dense)."""
        return self._globalise(ids, self.table_offsets[self.feature_table[name]])

    def check_ids(self, batch: Batch) -> None:
        """Raise ValueError if any id lies outside its table (slow: for tests and debugging)."""
        checks = [(n, batch.sparse[:, i]) for i, n in enumerate(self.sparse_names)]
        checks += [(n, batch.bags[n]) for n in self.bag_names]
        checks += [(n, batch.sequences[n]) for n in self.sequence_names]
        for name, ids in checks:
            table = self.feature_table[name]
            if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.table_rows[table]):
                raise ValueError(
                    f"feature {name!r}: ids in [{int(ids.min())}, {int(ids.max())}], "
                    f"table {table!r} has {self.table_rows[table]} rows"
                )

    def _lookup(self, rows: Tensor) -> Tensor:
        return F.embedding(rows, self.weight, padding_idx=PAD_ROW, sparse=self.sparse)

    def forward(self, batch: Batch) -> EmbeddedFeatures:
        B = batch.sparse.shape[0]
        parts: list[Tensor] = []

        # Sparse fields and numerical-field vectors: one lookup for all of them.
        n_sparse = len(self.sparse_names)
        n_num = self.numeric_rows.shape[0]
        if n_sparse or n_num:
            rows = self._globalise(batch.sparse, self.sparse_offsets)
            if n_num:
                rows = torch.cat([rows, self.numeric_rows.expand(B, n_num)], dim=1)
            emb = self._lookup(rows)  # [B, n_sparse + n_num, dim]
            if n_num:
                num = emb[:, n_sparse:] * batch.dense.unsqueeze(-1).to(emb.dtype)
                emb = torch.cat([emb[:, :n_sparse], num], dim=1)
            parts.append(emb)

        # Bags: masked mean in one fused kernel; padding_idx=0 excludes pad ids from sum and count
        # (an all-pad bag gives zeros).
        for name in self.bag_names:
            rows = self._globalise(batch.bags[name], self._offset_of[name])
            if self.fused_bags:
                pooled = F.embedding_bag(rows, self.weight, mode="mean", padding_idx=PAD_ROW, sparse=self.sparse)
            else:
                mask = (rows != PAD_ROW).unsqueeze(-1).to(self.weight.dtype)
                total = (self._lookup(rows) * mask).sum(dim=1)
                pooled = total / mask.sum(dim=1).clamp_min(1)
            parts.append(pooled.unsqueeze(1))

        # Sequences: kept unpooled for attention, plus a masked mean as a field.
        sequences: dict[str, tuple[Tensor, Tensor]] = {}
        for name in self.sequence_names:
            ids = batch.sequences[name]
            mask = ids != 0
            emb = self._lookup(self._globalise(ids, self._offset_of[name]))  # pad rows are zero
            sequences[name] = (emb, mask)
            parts.append(masked_mean(emb, mask).unsqueeze(1))

        # Behaviours (pool_behaviours): every per-position field's masked mean.
        if self.pool_behaviours:
            for emb, mask in self.behaviours(batch).values():
                B, L, n, d = emb.shape
                parts.append(masked_mean(emb.reshape(B, L, n * d), mask).view(B, n, d))

        fields = join_fields(parts, self.weight, B, self.dim)
        return EmbeddedFeatures(fields=fields, field_names=list(self.field_names), dense=batch.dense, sequences=sequences)

    def behaviours(self, batch: Batch) -> dict[str, tuple[Tensor, Tensor]]:
        """Every behaviour's vectors: name -> (``[B, L, F, dim]``, mask ``[B, L]``, True where a
        behaviour sits). Pad positions are zero vectors; a missing value at a real position is
        its field's OOV row."""
        out = {}
        for name in self.behaviour_names:
            ids = batch.behaviours[name]  # [B, L, F]
            emb = self._lookup(self._globalise(ids, getattr(self, f"behaviour_offsets_{name}")))
            out[name] = (emb, (ids != 0).any(dim=-1))
        return out

    def extra_repr(self) -> str:
        return (
            f"tables={len(self.table_offsets)}, rows={self.num_rows}, dim={self.dim}, "
            f"fields={len(self.field_names)}, sparse={self.sparse}, numeric_as_field={self.numeric_as_field}"
        )


def field_embedding(feature_map: FeatureMap, dim: int, model: str, pool_behaviours: bool = True) -> FeatureEmbedding:
    """The embedding of a model that treats every feature, numerical ones included, as a field
    of ``dim`` values, with the error such a model gives when the schema has no field at all
    (``pool_behaviours=False``: the model encodes behaviours itself)."""
    emb = FeatureEmbedding(feature_map, dim, numeric_as_field=True, pool_behaviours=pool_behaviours)
    if not emb.field_names:
        raise ValueError(f"{model} needs at least one feature")
    return emb


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(embedding parameters, all other parameters) of ``model``: the parameters of every
    :class:`FeatureEmbedding` inside it and the weight of every plain ``nn.Embedding`` (a peer
    library's own tables, e.g. FuxiCTR's, get the same embedding optimizer as ours), and the
    rest. Each parameter appears once."""
    emb: list[nn.Parameter] = []
    seen: set[int] = set()
    for m in model.modules():
        if isinstance(m, FeatureEmbedding):
            params = m.embedding_parameters()
        elif isinstance(m, nn.Embedding):
            params = [m.weight]
        else:
            continue
        for p in params:
            if id(p) not in seen:
                seen.add(id(p))
                emb.append(p)
    rest = [p for p in model.parameters() if id(p) not in seen]
    return emb, rest


def set_sparse_gradients(model: nn.Module, sparse: bool = True) -> int:
    """Make every :class:`FeatureEmbedding` and plain ``nn.Embedding`` in ``model`` produce
    sparse (or dense) gradients. Returns how many modules were switched. Call it before the first
    backward."""
    n = 0
    for m in model.modules():
        if isinstance(m, (FeatureEmbedding, nn.Embedding)):
            m.sparse = sparse
            n += 1
    return n
