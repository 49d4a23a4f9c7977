"""An architecture described by a small spec: what ``rankmixer search`` finds, trained, exported
and served as any registered model.

The space of the search papers (Rankitect, Wen et al. 2023; DistDNAS, Zhang et al. 2023; AutoML
for large-capacity ranking): blocks between the embedded inputs and the logit, each reading
earlier blocks' outputs. A block's output is a **set** ``[B, N, w]`` (N entities of width w) or a
**vector** ``[B, k]``; the source ``emb`` is the set of field embeddings ``[B, F, embedding_dim]``.

==========  ===========  =============================================================
type        reads/gives  what (parameters)
==========  ===========  =============================================================
mlp         vector       ``depth`` ReLU layers of ``width``
cross       vector       DCNv2 cross layers (``depth``; ``rank``: low rank, null = full)
gating      vector       ``x * sigmoid(W2 relu(W1 x))``, hidden ``width`` (default x/4)
dot         set -> vec   pairwise dot products of the N entities (DLRM), N(N-1)/2 values
fm          set -> vec   the FM bi-interaction vector ``((sum v)^2 - sum v^2) / 2``, w values
attention   set          ``depth`` AutoInt interacting layers, ``width`` = heads x head width
rankmixer   set          linear tokenizer to ``tokens`` x ``width``, then ``depth`` RankMixer
                         blocks (token mixing with H = T, per-token FFN x4, post-LN)
compress    set          linear recombination of the N entities into ``width`` (Wukong's LCB)
dhen        set          ``depth`` DHEN layers (DCN, self-attention and linear modules)
==========  ===========  =============================================================

Inputs combine by the reader's kind: a vector block flattens every input and concatenates them; a
set block concatenates its set inputs along N, first bringing each to the first set's width by a
linear map where the widths differ, and turns each vector input into one entity of that width
(a linear map). So every spec whose inputs name ``emb`` or earlier blocks builds, except a dot
block over a single entity (no pairs: an error naming the block); naming a later block (a cycle)
or an unknown one is an error naming the block. The blocks no other block reads
are the outputs: flattened, concatenated and fed to the task heads.
"""

from __future__ import annotations

import math
import re
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from rankmixer.core.strict import StrictModel
from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.dhen import DHENConfig, DHENLayer
from rankmixer.models.registry import register
from rankmixer.nn.attention import InteractingLayer
from rankmixer.nn.cross import CrossNetV2
from rankmixer.nn.embedding import field_embedding
from rankmixer.nn.fm_block import LinearCompressBlock
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.interaction import DotInteraction, fm_second_order
from rankmixer.nn.mlp import MLP
from rankmixer.nn.per_token_ffn import PerTokenFFN
from rankmixer.nn.token_mixing import TokenMixing

__all__ = ["BLOCK_PARAMS", "BlockSpec", "BlockType", "SearchedConfig", "SearchedModel", "block_kind", "describe_blocks",
           "output_entities"]

BlockType = Literal["mlp", "cross", "gating", "dot", "fm", "attention", "rankmixer", "compress", "dhen"]
# The parameters each block type reads (the others must be left out: a typo must not pass).
BLOCK_PARAMS: dict[str, tuple[str, ...]] = {
    "mlp": ("width", "depth"), "cross": ("depth", "rank"), "gating": ("width",), "dot": (), "fm": (),
    "attention": ("width", "heads", "depth"), "rankmixer": ("tokens", "width", "depth"), "compress": ("width",),
    "dhen": ("depth",),
}
REQUIRED = {"mlp": ("width",), "attention": ("width",), "rankmixer": ("tokens", "width"), "compress": ("width",)}
SOURCE = "emb"
_NAME = re.compile(r"[A-Za-z_]\w*")


def block_kind(block_type: str) -> str:
    """``vector`` or ``set``: what a block type gives."""
    return "vector" if block_type in ("mlp", "cross", "gating", "dot", "fm") else "set"


def output_entities(block_type: str, sizes: dict, input_entities: int) -> int:
    """How many entities a block's output is to a set block reading it, given how many entities its
    inputs make together (``input_entities``): a vector is one entity, compress gives ``width``,
    rankmixer ``tokens``, attention and dhen keep their input's. Lets a sampler see, before
    building, whether a dot or fm block would have pairs to multiply."""
    if block_kind(block_type) == "vector":
        return 1
    if block_type in ("compress", "rankmixer"):
        return sizes["width" if block_type == "compress" else "tokens"]
    return input_entities


class BlockSpec(StrictModel):
    name: str = Field(description="unique name; later blocks read it")
    type: BlockType
    inputs: list[str] = Field(default=[SOURCE], min_length=1, description="emb, or names of earlier blocks")
    width: int | None = Field(default=None, ge=1, le=8192, description="see the module docstring, per type")
    depth: int = Field(default=1, ge=1, le=16, description="layers inside the block")
    rank: int | None = Field(default=None, ge=1, le=4096, description="cross: low rank (null = full rank)")
    heads: int = Field(default=1, ge=1, le=64, description="attention heads (divide width)")
    tokens: int | None = Field(default=None, ge=1, le=256, description="rankmixer: tokens T (divide width)")

    @model_validator(mode="after")
    def _params_of_its_type(self) -> "BlockSpec":
        if not _NAME.fullmatch(self.name) or self.name == SOURCE:
            raise ValueError(f"block name {self.name!r}: letters, digits and _, not starting with a digit, not {SOURCE!r}")
        given = {k for k in ("width", "rank", "tokens") if getattr(self, k) is not None}
        given |= {k for k, default in (("depth", 1), ("heads", 1)) if getattr(self, k) != default}
        extra = sorted(given - set(BLOCK_PARAMS[self.type]))
        if extra:
            raise ValueError(f"block {self.name!r}: a {self.type} block takes no {', '.join(extra)}")
        missing = [k for k in REQUIRED.get(self.type, ()) if getattr(self, k) is None]
        if missing:
            raise ValueError(f"block {self.name!r}: a {self.type} block needs {', '.join(missing)}")
        if self.type == "attention" and self.width % self.heads:  # type: ignore[operator]
            raise ValueError(f"block {self.name!r}: width {self.width} is not divisible by heads {self.heads}")
        if self.type == "rankmixer" and self.width % self.tokens:  # type: ignore[operator]
            raise ValueError(f"block {self.name!r}: width {self.width} is not divisible by tokens {self.tokens} "
                             "(token mixing with H = T)")
        return self


class SearchedConfig(ModelConfig):
    blocks: list[BlockSpec] = Field(
        default=[BlockSpec(name="cross", type="cross", depth=2), BlockSpec(name="mlp", type="mlp", width=128, depth=2)],
        min_length=1, description="the architecture, in order (see the module docstring)")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")

    @model_validator(mode="after")
    def _a_dag(self) -> "SearchedConfig":
        seen = {SOURCE}
        for b in self.blocks:
            if b.name in seen:
                raise ValueError(f"blocks: the name {b.name!r} is used twice")
            later = {x.name for x in self.blocks} - seen - {b.name}
            for src in b.inputs:
                if src == b.name or src in later:
                    raise ValueError(f"block {b.name!r} reads {src!r}, which is not an earlier block (a cycle)")
                if src not in seen:
                    raise ValueError(f"block {b.name!r} reads {src!r}: no such block (known: {', '.join(sorted(seen))})")
            seen.add(b.name)
        return self


def describe_blocks(blocks: list[BlockSpec] | list[dict]) -> str:
    """One line per architecture: ``name=type(params)<-inputs; ...`` (for tables and logs)."""
    out = []
    for b in blocks:
        spec = b if isinstance(b, BlockSpec) else BlockSpec.model_validate(b)
        params = ",".join(f"{k}={getattr(spec, k)}" for k in BLOCK_PARAMS[spec.type]
                          if getattr(spec, k) is not None)
        out.append(f"{spec.name}={spec.type}({params})<-{'+'.join(spec.inputs)}")
    return "; ".join(out)


class GatingBlock(nn.Module):
    """``x * sigmoid(W2 relu(W1 x))``: a learned per-value gate of the input vector."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate = MLP(dim, [hidden], out_dim=dim)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.gate(x))


class RankMixerStack(nn.Module):
    """Linear tokenizer ``[B, N, w] -> [B, T, D]``, then ``depth`` blocks of
    ``X = LN(X + TokenMixing(X))``, ``X = LN(X + PFFN(X))``."""

    def __init__(self, num: int, width: int, tokens: int, dim: int, depth: int) -> None:
        super().__init__()
        self.tokens, self.dim = tokens, dim
        self.tokenizer = nn.Linear(num * width, tokens * dim)
        self.mixing = TokenMixing(tokens, dim)
        self.ffns = nn.ModuleList([PerTokenFFN(tokens, dim, expansion=4) for _ in range(depth)])
        self.norms = nn.ModuleList([nn.ModuleList([nn.LayerNorm(dim), nn.LayerNorm(dim)]) for _ in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        h = self.tokenizer(x.flatten(1)).view(x.shape[0], self.tokens, self.dim)
        for ffn, (n1, n2) in zip(self.ffns, self.norms):
            h = n1(h + self.mixing(h))
            h = n2(h + ffn(h))
        return h


class Block(nn.Module):
    """One block: its inputs combined by its kind (see the module docstring), then its op."""

    def __init__(self, spec: BlockSpec, sources: list[tuple[str, tuple[int, ...]]], embedding_dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.reads_set = spec.type not in ("mlp", "cross", "gating")
        self.adapters = nn.ModuleList()
        width = n = w = 0
        if not self.reads_set:  # every input flattened and concatenated
            width = sum(math.prod(shape) for _, shape in sources)
        else:  # sets at the first set's width, vectors as one entity each
            sets = [shape for _, shape in sources if len(shape) == 2]
            w = sets[0][1] if sets else embedding_dim
            for _, shape in sources:
                self.adapters.append(nn.Linear(shape[-1], w) if len(shape) == 1 or shape[1] != w else nn.Identity())
            n = sum(shape[0] if len(shape) == 2 else 1 for _, shape in sources)
        t = spec.type
        if t == "mlp":
            self.op: nn.Module = MLP(width, [spec.width] * spec.depth)  # type: ignore[list-item]
            self.out_shape: tuple[int, ...] = (spec.width,)  # type: ignore[assignment]
        elif t == "cross":
            self.op = CrossNetV2(width, spec.depth, spec.rank)
            self.out_shape = (width,)
        elif t == "gating":
            self.op = GatingBlock(width, spec.width or max(1, width // 4))
            self.out_shape = (width,)
        elif t == "dot":
            self.op = DotInteraction(n)
            self.out_shape = (self.op.out_features,)
        elif t == "fm":
            self.op = nn.Identity()
            self.out_shape = (w,)
        elif t == "attention":
            layers, d = [], w
            for _ in range(spec.depth):
                layers.append(InteractingLayer(d, spec.width, spec.heads, use_scale=True))  # type: ignore[arg-type]
                d = spec.width  # type: ignore[assignment]
            self.op = nn.Sequential(*layers)
            self.out_shape = (n, spec.width)  # type: ignore[assignment]
        elif t == "rankmixer":
            self.op = RankMixerStack(n, w, spec.tokens, spec.width, spec.depth)  # type: ignore[arg-type]
            self.out_shape = (spec.tokens, spec.width)  # type: ignore[assignment]
        elif t == "compress":
            self.op = LinearCompressBlock(n, spec.width)  # type: ignore[arg-type]
            self.out_shape = (spec.width, w)  # type: ignore[assignment]
        else:  # dhen: DCN, self-attention and linear modules, as models/dhen.py's default
            heads = next(h for h in (2, 1) if w % h == 0)
            cfg = DHENConfig(embedding_dim=w, attention_heads=heads)
            self.op = nn.Sequential(*[DHENLayer(n, w, cfg) for _ in range(spec.depth)])
            self.out_shape = (n, w)
        if math.prod(self.out_shape) == 0:  # dot over one entity: no pairs, so an empty output
            raise ValueError(f"block {spec.name!r}: a {t} block over its inputs ({', '.join(s for s, _ in sources)}) "
                             "gives an empty output: a dot block needs at least 2 entities")

    def forward(self, inputs: list[Tensor]) -> Tensor:
        if not self.reads_set:
            return self.op(torch.cat([x.flatten(1) for x in inputs], dim=1))
        parts = [a(x) if x.dim() == 3 else a(x).unsqueeze(1) for a, x in zip(self.adapters, inputs)]
        x = torch.cat(parts, dim=1)  # [B, N, w]
        if self.spec.type == "fm":
            return fm_second_order(x, reduce=False)
        return self.op(x)


@register("searched", SearchedConfig)
class SearchedModel(nn.Module):
    """Searched: a DAG of interaction blocks (MLP, DCN cross, gating, dot, FM, self-attention, RankMixer, linear compress, DHEN) from a spec, the space of Rankitect (Wen et al. 2023) and DistDNAS (Zhang et al. 2023).

    See the module docstring for the blocks and how their inputs combine.
    """

    def __init__(self, feature_map: FeatureMap, cfg: SearchedConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = field_embedding(feature_map, d, "searched")
        shapes: dict[str, tuple[int, ...]] = {SOURCE: (len(self.embedding.field_names), d)}
        self.blocks = nn.ModuleList()
        for spec in cfg.blocks:
            block = Block(spec, [(s, shapes[s]) for s in spec.inputs], d)
            shapes[spec.name] = block.out_shape
            self.blocks.append(block)
        read = {s for b in cfg.blocks for s in b.inputs}
        self.outputs = [b.name for b in cfg.blocks if b.name not in read]
        self.heads = TaskHeads(sum(math.prod(shapes[o]) for o in self.outputs), feature_map.num_tasks, cfg.head_hidden)

    def forward(self, batch: Batch) -> ModelOutput:
        values: dict[str, Tensor] = {SOURCE: self.embedding(batch).fields}
        for spec, block in zip(self.cfg.blocks, self.blocks):
            values[spec.name] = block([values[s] for s in spec.inputs])
        return ModelOutput(logits=self.heads(torch.cat([values[o].flatten(1) for o in self.outputs], dim=1)))
