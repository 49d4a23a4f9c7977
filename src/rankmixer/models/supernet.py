"""Supernet: every candidate block of a search space inside each of a few choice blocks, mixed by
learned architecture weights (differentiable architecture search, DNAS; DistDNAS, Zhang et al.
2023, and Rankitect's DNAS, Wen et al. 2023).

Choice block i reads ``emb`` (the field embeddings, ``[B, F, embedding_dim]``) and every choice
block before it. Each candidate op k is a block of the searched model (``rankmixer.models.searched``)
on those inputs; a linear map of its flattened output brings it to the choice block's common
shape, a set ``[B, set_size, embedding_dim]``, and the choice block gives::

    sum_k softmax(alpha_i / temperature)_k * P_k(op_k(inputs))

The candidate ``{type: zero}`` gives zeros: a choice block where it wins is dropped. The last
choice block, which the task heads read, never offers it.

**Paths** (weight sharing): :meth:`SupernetModel.set_path` runs one candidate per choice block,
a subnet with the supernet's weights; with ``training: sampled_path`` every training step draws
such a path uniformly (single-path training, the warm-up of SiGeo's sub-one-shot search).

**Width slicing** (``share_widths: true``): candidates of one type that differ only in their
width (an MLP's, a gating block's, a compress block's) or a cross block's rank share the weights
of the largest, each running on their leading slice (rankmixer.models.width_slicing), and so
does the linear map P_k after them. Without it every candidate has weights of its own.

**Cost-aware loss** (DistDNAS): ``aux_loss = cost_weight * E[FLOPs] / F_max`` with
``E[FLOPs] = sum_i sum_k w_ik FLOPs_ik``, FLOPs_ik the op's forward matmul FLOPs per sample
counted by the one FLOP counter on the supernet's input shapes (the maps P_k are not counted:
they exist only in the supernet) and ``F_max = sum_i max_k FLOPs_ik``, so the penalty lies in
``[0, cost_weight]`` whatever the space.

:func:`derive_blocks` turns architecture weights (this model's, or an average over several
searches) into a ``searched`` model's blocks: per choice block the ``keep`` heaviest candidates
other than zero, each reading ``emb`` and every block kept before it; a choice block whose
heaviest candidate is zero is left out.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError, field_validator
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.flops import count_flops
from rankmixer.models.registry import register
from rankmixer.models.searched import SOURCE, Block, BlockSpec
from rankmixer.models.width_slicing import LeadingSlice, meta_copy, slice_owners
from rankmixer.nn.embedding import field_embedding
from rankmixer.nn.heads import TaskHeads

__all__ = ["ZERO", "SupernetConfig", "SupernetModel", "candidate_label", "derive_blocks", "selection"]

ZERO = "zero"
DEFAULT_CANDIDATES: list[dict[str, Any]] = [
    {"type": "mlp", "width": 64}, {"type": "mlp", "width": 256}, {"type": "cross", "depth": 1, "rank": 8},
    {"type": "dot"}, {"type": "fm"}, {"type": "attention", "width": 16, "heads": 2},
    {"type": "rankmixer", "tokens": 4, "width": 32}, {"type": "compress", "width": 8}, {"type": ZERO},
]


def candidate_label(c: dict[str, Any]) -> str:
    """``type(size=value,...)``: one candidate in tables and logs."""
    sizes = ",".join(f"{k}={v}" for k, v in c.items() if k != "type")
    return f"{c['type']}({sizes})"


class SupernetConfig(ModelConfig):
    choice_blocks: int = Field(3, ge=1, le=16, description="choice blocks, each reading emb and every one before")
    set_size: int = Field(8, ge=1, le=512, description="entities of a choice block's output (of embedding_dim)")
    candidates: list[dict[str, Any]] = Field(
        default=DEFAULT_CANDIDATES, min_length=1,
        description="candidate ops of every choice block: a searched block's type and sizes, or {type: zero}")
    cost_weight: float = Field(0.0, ge=0, description="lambda of the cost-aware loss (0: accuracy only)")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of the architecture weights")
    # alpha = arch_lr_multiplier x a stored parameter: with Adam, alpha then moves that many
    # times as fast as the weights, so that the few steps of one pass over a day can move it.
    arch_lr_multiplier: float = Field(10.0, gt=0, description="alpha's speed relative to the weights (Adam)")
    # mixture: every candidate runs, mixed by softmax(alpha) (DNAS); sampled_path: each training
    # step runs one candidate per choice block drawn uniformly (single-path weight sharing, the
    # warm-up of sub-one-shot search, SiGeo), alpha unused.
    training: Literal["mixture", "sampled_path"] = "mixture"
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")
    share_widths: bool = Field(False, description="candidates differing only in width (or a cross block's rank) "
                                                  "share the widest one's weights, each on its leading slice")

    @field_validator("candidates")
    @classmethod
    def _valid_blocks(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for i, c in enumerate(value):
            if not isinstance(c, dict) or "type" not in c:
                raise ValueError(f"candidates[{i}]: a mapping with a type, got {c!r}")
            if c["type"] == ZERO:
                if len(c) > 1:
                    raise ValueError(f"candidates[{i}]: a zero candidate takes no sizes")
                continue
            if {"name", "inputs"} & set(c):
                raise ValueError(f"candidates[{i}]: name and inputs are set by the supernet, not the candidate")
            try:
                BlockSpec.model_validate({"name": "candidate", **c})
            except ValidationError as e:
                why = "; ".join(f"{'.'.join(map(str, err['loc'])) + ': ' if err['loc'] else ''}"
                                f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())
                raise ValueError(f"candidates[{i}] ({c['type']}): {why}") from None
        labels = [candidate_label(c) for c in value]
        if len(set(labels)) != len(labels):
            raise ValueError(f"candidates: {next(x for x in labels if labels.count(x) > 1)} is listed twice")
        if all(c["type"] == ZERO for c in value):
            raise ValueError("candidates: at least one candidate other than zero is needed")
        return value


class Projection(nn.Module):
    """An op's output, flattened, mapped linearly to ``[B, n, w]``."""

    def __init__(self, in_features: int, n: int, w: int) -> None:
        super().__init__()
        self.n, self.w = n, w
        self.linear = nn.Linear(in_features, n * w)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.flatten(1)).view(x.shape[0], self.n, self.w)


def _flops_per_sample(spec: BlockSpec, sources: list[tuple[str, tuple[int, ...]]], embedding_dim: int) -> float:
    """Forward FLOPs per sample of one candidate, counted on a CPU copy (FLOPs do not depend on
    the weights, and the model itself may be built on the meta device)."""
    rows = 2
    with torch.device("cpu"), torch.no_grad():
        block = Block(spec, sources, embedding_dim)
        inputs = [torch.zeros(rows, *s) for _, s in sources]
        return count_flops(lambda: block(inputs)) / rows


@register("supernet", SupernetConfig)
class SupernetModel(nn.Module):
    """Supernet: choice blocks mixing every candidate block of a search space by softmax(alpha), with a cost-aware (expected FLOPs) loss, the one-shot model of DNAS (DistDNAS, Zhang et al. 2023; Rankitect, Wen et al. 2023).

    See the module docstring for the mixing, the cost and the derived architecture.
    """

    def __init__(self, feature_map: FeatureMap, cfg: SupernetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = field_embedding(feature_map, d, "supernet")
        shapes: list[tuple[int, ...]] = [(len(self.embedding.field_names), d)]
        self.ops = nn.ModuleList()
        self.projections = nn.ModuleList()
        flops = [[0.0] * len(cfg.candidates) for _ in range(cfg.choice_blocks)]
        mask = [[False] * len(cfg.candidates) for _ in range(cfg.choice_blocks)]
        # candidate k runs on the weights of candidate owners[k] (itself unless widths are shared)
        self.owners = slice_owners(cfg.candidates) if cfg.share_widths else list(range(len(cfg.candidates)))
        self.sliced: list[dict[int, tuple[LeadingSlice, LeadingSlice]]] = []
        for i in range(cfg.choice_blocks):
            ops, projections = nn.ModuleList(), nn.ModuleList()
            sources = [(SOURCE if j == 0 else f"c{j - 1}", s) for j, s in enumerate(shapes)]
            specs = {k: BlockSpec.model_validate({"name": f"c{i}_{k}", **c})
                     for k, c in enumerate(cfg.candidates) if c["type"] != ZERO}
            for k, c in enumerate(cfg.candidates):
                if c["type"] == ZERO or self.owners[k] != k:
                    ops.append(nn.Identity())  # never called: zero, or run on its owner's weights
                    projections.append(nn.Identity())
                    mask[i][k] = c["type"] == ZERO and i == cfg.choice_blocks - 1  # the heads' input is never zero
                    continue
                block = Block(specs[k], sources, d)
                ops.append(block)
                projections.append(Projection(math.prod(block.out_shape), cfg.set_size, d))
            sliced = {}
            for k, spec in specs.items():
                flops[i][k] = _flops_per_sample(spec, sources, d)
                own = self.owners[k]
                if own != k:
                    block = meta_copy(lambda: Block(spec, sources, d))
                    proj = meta_copy(lambda: Projection(math.prod(block.out_shape), cfg.set_size, d))
                    where = f"choice block {i}, candidate {candidate_label(cfg.candidates[k])}"
                    sliced[k] = (LeadingSlice(block, ops[own], where), LeadingSlice(proj, projections[own], where))
            self.sliced.append(sliced)
            self.ops.append(ops)
            self.projections.append(projections)
            shapes.append((cfg.set_size, d))
        self.register_buffer("op_flops", torch.tensor(flops, dtype=torch.float64), persistent=False)
        self.register_buffer("unavailable", torch.tensor(mask), persistent=False)
        self.max_flops = sum(max(row) for row in flops) or 1.0
        self.alpha_stored = nn.Parameter(torch.zeros(cfg.choice_blocks, len(cfg.candidates)))
        self.heads = TaskHeads(cfg.set_size * d, feature_map.num_tasks, cfg.head_hidden)

    def architecture_weights(self) -> Tensor:
        """``[choice_blocks, candidates]``: softmax(alpha / temperature) per choice block; an
        unavailable candidate (zero in the last block) has weight 0."""
        logits = (self.alpha / self.cfg.temperature).masked_fill(self.unavailable, float("-inf"))
        return torch.softmax(logits, dim=1)

    @property
    def alpha(self) -> Tensor:
        """The architecture logits ``[choice_blocks, candidates]``."""
        return self.cfg.arch_lr_multiplier * self.alpha_stored

    def expected_flops(self, weights: Tensor | None = None) -> Tensor:
        """sum_i sum_k w_ik FLOPs_ik: the forward FLOPs per sample the weights expect."""
        w = self.architecture_weights() if weights is None else weights
        return (w * self.op_flops.to(w.dtype)).sum()

    def paths(self) -> list[list[int]]:
        """Per choice block, the candidates a path may take (zero not in the last block)."""
        return [[k for k in range(len(self.cfg.candidates)) if not self.unavailable[i, k]]
                for i in range(self.cfg.choice_blocks)]

    def set_path(self, path: list[int] | None) -> None:
        """Run one candidate per choice block (a subnet, with the supernet's weights), or the
        mixture again (None)."""
        if path is not None:
            allowed = self.paths()
            if len(path) != len(allowed) or any(k not in ks for k, ks in zip(path, allowed)):
                raise ValueError(f"path {path}: one candidate per choice block from {allowed}")
        self.path = None if path is None else list(path)

    path: list[int] | None = None

    def candidate(self, i: int, k: int, values: list[Tensor]) -> Tensor:
        """Candidate k of choice block i on ``values`` (emb and the blocks before), mapped to the
        choice block's shape: by its own weights, or by a leading slice of its owner's."""
        if k in self.sliced[i]:
            op, proj = self.sliced[i][k]
            return proj(op(values))
        return self.projections[i][k](self.ops[i][k](values))

    def forward(self, batch: Batch) -> ModelOutput:
        path = self.path
        if path is None and self.training and self.cfg.training == "sampled_path":
            path = [ks[int(torch.randint(len(ks), ()))] for ks in self.paths()]
        values: list[Tensor] = [self.embedding(batch).fields]
        if path is not None:  # one candidate per block: the others do not run
            for i, k in enumerate(path):
                if self.cfg.candidates[k]["type"] == ZERO:
                    values.append(values[0].new_zeros(values[0].shape[0], self.cfg.set_size, self.cfg.embedding_dim))
                else:
                    values.append(self.candidate(i, k, values))
            return ModelOutput(logits=self.heads(values[-1].flatten(1)))
        weights = self.architecture_weights()
        for i in range(self.cfg.choice_blocks):
            mixed = None
            for k, c in enumerate(self.cfg.candidates):
                if c["type"] == ZERO:
                    continue
                term = weights[i, k] * self.candidate(i, k, values)
                mixed = term if mixed is None else mixed + term
            values.append(mixed)  # type: ignore[arg-type]
        expected = self.expected_flops(weights)
        aux = self.cfg.cost_weight * expected / self.max_flops if self.cfg.cost_weight else None
        return ModelOutput(logits=self.heads(values[-1].flatten(1)), aux_loss=aux,
                           metrics={"expected_flops": float(expected.detach())})


def selection(cfg: SupernetConfig, weights: Tensor | list[list[float]], keep: int = 1) -> list[list[int]]:
    """Per choice block, the candidates kept from architecture weights ``[choice_blocks,
    candidates]``: the ``keep`` heaviest other than zero, heaviest first; none where zero is the
    heaviest (never in the last block)."""
    w = torch.as_tensor(weights, dtype=torch.float64)
    if tuple(w.shape) != (cfg.choice_blocks, len(cfg.candidates)):
        raise ValueError(f"architecture weights of shape {tuple(w.shape)}; the supernet has "
                         f"{cfg.choice_blocks} choice blocks of {len(cfg.candidates)} candidates")
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    zero = {k for k, c in enumerate(cfg.candidates) if c["type"] == ZERO}
    out = []
    for i in range(cfg.choice_blocks):
        order = sorted(range(w.shape[1]), key=lambda k: (-float(w[i, k]), k))
        dropped = order[0] in zero and i < cfg.choice_blocks - 1
        out.append([] if dropped else [k for k in order if k not in zero][:keep])
    return out


def derive_blocks(cfg: SupernetConfig, weights: Tensor | list[list[float]], keep: int = 1) -> list[dict[str, Any]]:
    """The searched model's blocks from architecture weights (see :func:`selection` and the
    module docstring): block ``c{i}_{type}{k}`` is candidate k of choice block i, reading ``emb``
    and every block kept before it."""
    blocks: list[dict[str, Any]] = []
    kept_before: list[str] = []
    for i, chosen in enumerate(selection(cfg, weights, keep)):
        names = []
        for k in chosen:
            c = cfg.candidates[k]
            names.append(f"c{i}_{c['type']}{k}")
            blocks.append({"name": names[-1], **c, "inputs": [SOURCE, *kept_before]})
        kept_before += names
    return blocks
