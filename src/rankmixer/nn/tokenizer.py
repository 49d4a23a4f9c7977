"""RankMixer's tokenizer: embedded features -> ``T`` tokens of width ``D``.

Input: :class:`~rankmixer.nn.embedding.EmbeddedFeatures` (``fields [B, F, d]``, every feature a
``d``-wide field: sparse, numerical (``numeric_as_field``), bags and sequences mean-pooled).
Output: ``[B, T, D]``. Sequence features first get their field vector from
:class:`SequencePooling` (masked mean, or DIN-style target attention).

Modes (both use a separate projection per token: the paper leaves shared vs per-chunk open, and
per chunk lets chunks of different features use different maps):

``semantic``
    One token source per feature group of the schema, split or merged to exactly ``T``
    contiguous slices of the group-ordered fields (:func:`plan_semantic_sources` has the
    deterministic algorithm); source ``i`` is projected by its own ``Linear(w_i, D)``.
``auto`` ("concat and chunk", the paper's description)
    All fields concatenated in field order (``F * d``), zero-padded to ``T * c`` with
    ``c = ceil(F * d / T)``, cut into ``T`` chunks of width ``c``, chunk ``i`` projected by its own
    ``Linear(c, D)`` (stored stacked ``[T, c, D]``, one batched matmul).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from rankmixer.data.feature_map import FeatureMap
from rankmixer.nn.embedding import EmbeddedFeatures
from rankmixer.nn.mlp import MLP

TokenizerMode = Literal["semantic", "auto"]
PoolingMode = Literal["mean", "target_attention"]

OTHER_GROUP = "other"


# ------------------------------------------------------------------------------------------
# sequence pooling
# ------------------------------------------------------------------------------------------
def sequence_targets(
    feature_map: FeatureMap, field_names: Sequence[str], targets: Mapping[str, str] | None = None
) -> dict[str, str]:
    """sequence name -> target feature name for every sequence that gets target attention
    (explicit ``targets`` first, else ``share_with``). Unknown names are errors."""
    targets = dict(targets or {})
    seq_names = [f.name for f in feature_map.sequences]
    for s, t in targets.items():
        if s not in seq_names:
            raise ValueError(f"sequence_targets: {s!r} is not a sequence feature; sequences: {seq_names}")
        if t not in field_names:
            raise ValueError(f"sequence_targets[{s!r}] = {t!r} is not a field; fields: {list(field_names)}")
    out: dict[str, str] = {}
    for f in feature_map.sequences:
        t = targets.get(f.name) or f.share_with
        if t is not None:
            out[f.name] = t
    return out


def activation_weights(unit: nn.Module, hist: Tensor, mask: Tensor, target: Tensor, softmax: bool) -> Tensor:
    """DIN's activation unit (Zhou et al. 2018) over a history: ``[B, L]`` weights
    ``a(h_l, q) = unit([h_l, q, h_l - q, h_l * q])`` of every position of ``hist`` ``[B, L, w]``
    against the target ``q`` ``[B, w]``, zero at pad positions (``mask`` ``[B, L]`` False); with
    ``softmax`` normalised over the real positions (an all-pad row gets zeros), else DIN's
    unnormalised scores."""
    q = target.unsqueeze(1).expand_as(hist)
    scores = unit(torch.cat([hist, q, hist - q, hist * q], dim=-1)).squeeze(-1)  # [B, L]
    if softmax:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return scores.softmax(dim=-1) * mask  # an all-pad row: uniform * 0 = 0
    return scores * mask


class SequencePooling(nn.Module):
    """Sets the field vectors of sequence features. ``forward(emb) -> fields [B, F, d]`` in
    ``emb.field_names`` order.

    * ``mean``: the masked mean :class:`FeatureEmbedding` already put in ``fields``.
    * ``target_attention``: DIN-style attention of the history against a target feature's
      embedding (Zhou et al. 2018). For history ``h_1..h_L`` (pad slots masked) and target ``q``,
      an activation unit ``a(h, q) = MLP([h, q, h - q, h * q])`` (hidden ``attention_hidden``,
      ``activation``, one output; :func:`activation_weights`) scores every position; the pooled
      vector is ``sum_l w_l h_l`` with ``w = softmax(a)`` over the real positions (``attention_softmax=True``: the scale of the
      mean it replaces) or ``w = a`` masked (DIN's unnormalised form). An all-pad sequence pools
      to zero. The target of sequence ``s`` is ``targets[s]`` if given, else the sparse feature
      it ``share_with``; a sequence with neither keeps mean pooling (``mean_sequences``). Each
      attended sequence has its own activation unit; pooled vectors replace the sequences'
      fields, field order unchanged.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        field_names: Sequence[str],
        dim: int,
        mode: PoolingMode = "mean",
        targets: Mapping[str, str] | None = None,
        attention_hidden: Sequence[int] = (32,),
        softmax: bool = True,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if mode not in ("mean", "target_attention"):
            raise ValueError(f"unknown sequence pooling {mode!r}; known: mean, target_attention")
        self.mode = mode
        self.dim = dim
        self.softmax = softmax
        self.field_names = list(field_names)
        index = {n: i for i, n in enumerate(self.field_names)}
        self.targets: dict[str, str] = (
            sequence_targets(feature_map, self.field_names, targets) if mode == "target_attention" else {}
        )
        self.mean_sequences = [f.name for f in feature_map.sequences if f.name not in self.targets]
        self.attended = list(self.targets)
        self.seq_field_index = [index[s] for s in self.attended]
        self.target_field_index = [index[self.targets[s]] for s in self.attended]
        self.units = nn.ModuleDict(
            {s: MLP(4 * dim, list(attention_hidden), 1, activation=activation) for s in self.attended}
        )

    def attention_weights(self, name: str, hist: Tensor, mask: Tensor, target: Tensor) -> Tensor:
        """``[B, L]`` pooling weights of sequence ``name`` (zero at pad positions)."""
        return activation_weights(self.units[name], hist, mask, target, self.softmax)

    def forward(self, emb: EmbeddedFeatures) -> Tensor:
        fields = emb.fields
        if not self.attended:
            return fields
        pooled = []
        for name, ti in zip(self.attended, self.target_field_index):
            hist, mask = emb.sequences[name]
            w = self.attention_weights(name, hist, mask, fields[:, ti])
            pooled.append((w.unsqueeze(-1).to(hist.dtype) * hist).sum(dim=1))  # [B, d]
        idx = torch.tensor(self.seq_field_index, device=fields.device)
        # out-of-place index_copy: the fields tensor may be needed by autograd as it is
        return fields.index_copy(1, idx, torch.stack(pooled, dim=1).to(fields.dtype))

    def extra_repr(self) -> str:
        return f"mode={self.mode}, targets={self.targets}, softmax={self.softmax}"


def attention_unit_params(dim: int, hidden: Sequence[int]) -> int:
    """Parameters of one DIN activation unit ``MLP(4d -> hidden -> 1)``."""
    widths = [4 * dim, *hidden, 1]
    return sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))


def attention_unit_flops(dim: int, hidden: Sequence[int], seq_len: int) -> int:
    """Matmul FLOPs (2 per multiply-add) of one activation unit over a sequence of ``seq_len``."""
    widths = [4 * dim, *hidden, 1]
    return 2 * seq_len * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


# ------------------------------------------------------------------------------------------
# semantic token sources
# ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    """Token source: slice ``[start, end)`` of the group-ordered concatenation ``e``; ``name``
    says which group(s) it came from (``group``, ``group#i`` for a piece, ``a+b`` merged)."""

    name: str
    start: int
    end: int

    @property
    def width(self) -> int:
        return self.end - self.start


def group_fields(field_names: Sequence[str], feature_groups: Mapping[str, Sequence[str]]) -> list[tuple[str, list[str]]]:
    """Step 1 of the semantic plan: non-empty ``(group, fields)`` in order, ``other`` last."""
    known = set(field_names)
    seen: dict[str, str] = {}
    groups: list[tuple[str, list[str]]] = []
    for g, names in feature_groups.items():
        for n in names:
            if n not in known:
                raise ValueError(f"feature group {g!r} names {n!r}, which is not a field; fields: {list(field_names)}")
            if n in seen:
                raise ValueError(f"feature {n!r} is in two feature groups: {seen[n]!r} and {g!r}")
            seen[n] = g
        if names:
            groups.append((g, list(names)))
    rest = [n for n in field_names if n not in seen]
    if rest:
        name = OTHER_GROUP
        while name in feature_groups:
            name = "_" + name
        groups.append((name, rest))
    return groups


def plan_semantic_sources(
    field_names: Sequence[str], feature_groups: Mapping[str, Sequence[str]], dim: int, num_tokens: int
) -> tuple[list[str], list[Source]]:
    """``(field order, sources)``: the fields in group order (``e`` is their concatenation) and
    the ``num_tokens`` slices of ``e``.

    1. Groups: ``feature_map.feature_groups`` in its order, each group's fields in the group's
       listed order; fields in no group form a last group ``other`` (field order). A feature
       named in two groups, or a group naming an unknown feature, is an error; empty groups are
       dropped. The fields, reordered group by group, are concatenated into ``e`` (``F * d``
       wide); every source is a contiguous slice of ``e``, starting with one slice per group.
    2. While there are fewer than ``T`` sources: take the widest one (first on ties) and cut it
       in two. The cut is at the field boundary nearest its middle (the lower one on ties) if
       the slice spans more than one field, else at its middle element. It fails only if
       ``T > F * d``.
    3. While there are more than ``T`` sources: merge the adjacent pair with the smallest
       combined width (first pair on ties) into one slice. (Adjacent only, so a source stays a
       contiguous, semantically ordered slice; merges stay inside neighbouring groups.)
    4. Source ``i`` (width ``w_i``) is projected by its own ``Linear(w_i, D)`` to token ``i``.

    Deterministic: it depends only on the field names, the groups, ``d`` and ``T``; every field
    element lands in exactly one source.
    """
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    groups = group_fields(field_names, feature_groups)
    order = [n for _, names in groups for n in names]
    total = len(order) * dim
    if total == 0:
        raise ValueError("the tokenizer needs at least one field")
    if num_tokens > total:
        raise ValueError(f"cannot make {num_tokens} tokens from {total} input values ({len(order)} fields x {dim})")
    sources: list[Source] = []
    pos = 0
    for g, names in groups:
        sources.append(Source(g, pos, pos + len(names) * dim))
        pos += len(names) * dim
    pieces: dict[str, int] = {}
    while len(sources) < num_tokens:
        i = max(range(len(sources)), key=lambda j: (sources[j].width, -j))  # widest, first on ties
        s = sources[i]
        mid = (s.start + s.end) / 2
        inner = [b for b in range((s.start // dim + 1) * dim, s.end, dim) if b > s.start]
        cut = min(inner, key=lambda b: (abs(b - mid), b)) if inner else s.start + s.width // 2
        base = s.name
        k = pieces.get(base, 0)
        pieces[base] = k + 2
        sources[i : i + 1] = [Source(f"{base}#{k}", s.start, cut), Source(f"{base}#{k + 1}", cut, s.end)]
    while len(sources) > num_tokens:
        i = min(range(len(sources) - 1), key=lambda j: (sources[j].width + sources[j + 1].width, j))
        a, b = sources[i], sources[i + 1]
        sources[i : i + 2] = [Source(f"{a.name}+{b.name}", a.start, b.end)]
    return order, sources


def auto_chunk_width(num_fields: int, dim: int, num_tokens: int) -> int:
    """``c = ceil(F * d / T)``: the chunk width of ``auto`` mode."""
    return math.ceil(num_fields * dim / num_tokens)


def token_input_widths(
    mode: TokenizerMode,
    field_names: Sequence[str],
    feature_groups: Mapping[str, Sequence[str]],
    dim: int,
    num_tokens: int,
) -> list[int]:
    """Input width of each token's projection (what parameter and FLOP counts need)."""
    if mode == "semantic":
        return [s.width for s in plan_semantic_sources(field_names, feature_groups, dim, num_tokens)[1]]
    if mode == "auto":
        if not field_names:
            raise ValueError("the tokenizer needs at least one field")
        return [auto_chunk_width(len(field_names), dim, num_tokens)] * num_tokens
    raise ValueError(f"unknown tokenizer mode {mode!r}; known: semantic, auto")


# ------------------------------------------------------------------------------------------
# tokenizer
# ------------------------------------------------------------------------------------------
class Tokenizer(nn.Module):
    """``EmbeddedFeatures -> [B, T, D]`` (the modes: see the module docstring).

    Args:
        feature_map: for the feature groups and the sequences' targets.
        field_names: ``FeatureEmbedding.field_names`` (the order of ``fields``).
        embedding_dim: d.
        num_tokens: T.
        hidden_dim: D.
        mode: ``semantic`` | ``auto``.
        pooling: a :class:`SequencePooling` (None: fields as embedded, i.e. mean pooling).
        feature_groups: the groups of the semantic plan (default ``feature_map.feature_groups``);
            a model that adds fields of its own (RankMixer's sequence tokens) passes groups
            naming them, and hands their vectors to ``forward`` as ``extra``.
    """

    def __init__(
        self,
        feature_map: FeatureMap,
        field_names: Sequence[str],
        embedding_dim: int,
        num_tokens: int,
        hidden_dim: int,
        mode: TokenizerMode = "semantic",
        pooling: SequencePooling | None = None,
        feature_groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        self.mode = mode
        self.num_tokens, self.hidden_dim, self.embedding_dim = num_tokens, hidden_dim, embedding_dim
        self.field_names = list(field_names)
        self.pooling = pooling
        F, d, T, D = len(self.field_names), embedding_dim, num_tokens, hidden_dim
        if mode == "semantic":
            groups = feature_map.feature_groups if feature_groups is None else feature_groups
            order, self.sources = plan_semantic_sources(self.field_names, groups, d, T)
            index = {n: i for i, n in enumerate(self.field_names)}
            perm = [index[n] for n in order]
            self.identity_order = perm == list(range(F))
            self.register_buffer("field_order", torch.tensor(perm, dtype=torch.long), persistent=False)
            self.proj = nn.ModuleList(nn.Linear(s.width, D) for s in self.sources)
        elif mode == "auto":
            if F == 0:
                raise ValueError("the tokenizer needs at least one field")
            self.sources = []
            self.chunk = auto_chunk_width(F, d, T)
            self.pad = T * self.chunk - F * d
            self.weight = nn.Parameter(torch.empty(T, self.chunk, D))
            self.bias = nn.Parameter(torch.empty(T, D))
            bound = 1.0 / math.sqrt(self.chunk)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)
        else:
            raise ValueError(f"unknown tokenizer mode {mode!r}; known: semantic, auto")

    def input_widths(self) -> list[int]:
        if self.mode == "semantic":
            return [s.width for s in self.sources]
        return [self.chunk] * self.num_tokens

    def forward(self, emb: EmbeddedFeatures, extra: Tensor | None = None) -> Tensor:
        """Tokens of the embedded fields (sequences pooled), followed in field order by the
        ``extra`` fields ``[B, S, d]`` a model appended to ``field_names``."""
        fields = self.pooling(emb) if self.pooling is not None else emb.fields  # [B, F, d]
        if extra is not None:
            fields = torch.cat([fields, extra], dim=1)
        B = fields.shape[0]
        if self.mode == "semantic":
            if not self.identity_order:
                fields = fields.index_select(1, self.field_order)
            e = fields.reshape(B, -1)
            return torch.stack([p(e[:, s.start : s.end]) for p, s in zip(self.proj, self.sources)], dim=1)
        e = fields.reshape(B, -1)
        if self.pad:
            e = torch.nn.functional.pad(e, (0, self.pad))
        chunks = e.view(B, self.num_tokens, self.chunk).transpose(0, 1)  # [T, B, c]
        return torch.baddbmm(self.bias.unsqueeze(1), chunks, self.weight).transpose(0, 1)

    def extra_repr(self) -> str:
        if self.mode == "semantic":
            return f"mode=semantic, tokens={self.num_tokens}, dim={self.hidden_dim}, sources={[s.name for s in self.sources]}"
        return f"mode=auto, tokens={self.num_tokens}, dim={self.hidden_dim}, chunk={self.chunk}, pad={self.pad}"
