"""MoS, Mixture of Sequence (Lin et al., WWW'26, arXiv 2604.20858): a theme-aware mixture of
experts around any behaviour encoder.

"Session hopping": a user's interest is stable inside a session, shifts across sessions and
returns sessions later. MoS wraps a backbone encoder (``din``, ``dien``, ``interformer``,
``pyramid``, ...) and fuses three kinds of experts with a gate:

* **global**: the backbone over the whole history;
* **short-term**: the backbone over the ``short_term`` most recent behaviours;
* **theme** (one per theme, ``themes`` = K): the backbone over the theme-coherent subsequence
  of the sessions the router assigns to that theme.

The paper publishes neither the router nor its loss; this is our design (ablated in
``docs/sessions_pages.md``):

* sessions come from the data (the behaviour's derived session field,
  :class:`~rankmixer.data.schema.SessionSplit`); a session's vector is the mean of its
  positions' vectors (every field), projected to ``dim`` and layer-normalised;
* the router scores each session against K learned theme prototypes,
  ``s_{j,k} = <LN(W e_j), p_k> / (sqrt(dim) * temperature)``, and assigns by a softmax over
  themes (``routing: soft``), or top-1 (``hard``: the one-hot assignment forward, the softmax's
  gradient backward, a straight-through estimator);
* theme k's subsequence: hard, the positions of the sessions assigned to k moved to the front
  in order (a plain shorter history) and scaled by the straight-through weight 1 (which carries
  the router's gradient); soft, every position scaled by its session's weight for k;
* its elements (``theme_tokens``): the sessions' behaviours, or one token per session (the mean
  of its behaviours' vectors, oldest session first), which weighs every visit to a theme alike
  whatever its length, so attention counts *sessions*; at most ``max_sessions`` tokens;
* every theme runs through one shared theme backbone in one batched call (K x B rows); the
  global and short-term experts have backbones of their own;
* the gate is a softmax over the experts from the row's field vectors (``context``); the
  output is the gated sum of the experts' tokens, the backbone's shape;
* a balance term ``balance_weight * (K * sum_k u_k^2 - 1)``, ``u_k`` the batch's mean
  assignment to theme k over real sessions (0 when uniform, K - 1 when one theme takes all),
  keeps themes from collapsing; added to the backbones' own auxiliary losses.

``theme_experts: false``, ``short_term: 0`` and ``global_expert: false`` remove an expert kind
(the ablations). A behaviour without a session field is an error naming it. :class:`MoSRouter`
builds what each expert reads; :class:`MoSEncoder` runs it through backbones and fuses them;
InterFormer (``models/interformer.py``) runs it through its own interleaved sequence sides.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from rankmixer.core.strict import StrictModel
from rankmixer.nn.sequence.base import BehaviourInput, BehaviourSpec, EncoderOutput, build_encoder, register_encoder


class MoSConfig(StrictModel):
    backbone: str = Field(default="din", description="the wrapped encoder (any registered one but mos)")
    backbone_options: dict[str, Any] = Field(default_factory=dict, description="the backbone's config")
    themes: int = Field(default=4, ge=1, description="latent themes K (theme experts)")
    short_term: int = Field(default=10, ge=0, description="behaviours the short-term expert sees (0: none)")
    theme_experts: bool = Field(default=True, description="the K theme experts (false: ablation)")
    global_expert: bool = Field(default=True, description="the expert over the whole history")
    routing: Literal["soft", "hard"] = Field(default="soft", description="soft weights or top-1 (straight-through)")
    theme_tokens: Literal["behaviours", "sessions"] = Field(
        default="behaviours", description="a theme expert's elements: the routed behaviours, or one mean token per routed session")
    temperature: float = Field(default=1.0, gt=0.0, description="of the router's softmax")
    balance_weight: float = Field(default=0.01, ge=0.0, description="weight of the theme-usage balance term")

    @model_validator(mode="after")
    def _check(self) -> "MoSConfig":
        if self.backbone == "mos":
            raise ValueError("MoS cannot wrap itself")
        if not (self.theme_experts or self.global_expert or self.short_term):
            raise ValueError("MoS needs at least one expert (theme_experts, global_expert or short_term > 0)")
        return self


def left_align(hist: Tensor, mask: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
    """The positions where ``keep`` ([B, L] bool) moved to the front in their order:
    ``hist [B, L, ...]`` gathered, and the new mask."""
    keep = keep & mask
    kept = keep.long().cumsum(dim=1)
    total = kept[:, -1:]
    # Each position's new place: the kept ones first, the others after them, both in order (a
    # permutation, so a scatter; ONNX has no stable sort).
    target = torch.where(keep, kept - 1, total + (~keep).long().cumsum(dim=1) - 1)
    index = target.view(*target.shape, *([1] * (hist.dim() - 2))).expand_as(hist)
    new_mask = torch.arange(keep.shape[1], device=keep.device).unsqueeze(0) < total
    return torch.zeros_like(hist).scatter(1, index, hist), new_mask


def recent(x: BehaviourInput, n: int) -> BehaviourInput:
    """The ``n`` most recent behaviours of ``x`` (real positions first, so the last real ones)."""
    B, L = x.mask.shape
    n = min(n, L)
    start = (x.lengths - n).clamp(min=0)
    pos = start.unsqueeze(1) + torch.arange(n, device=x.mask.device)  # [B, n]
    mask = torch.arange(n, device=x.mask.device).unsqueeze(0) < x.lengths.clamp(max=n).unsqueeze(1)
    pos = torch.where(mask, pos, torch.zeros_like(pos))
    index = pos.view(B, n, 1, 1).expand(B, n, *x.hist.shape[2:])
    hist = x.hist.gather(1, index) * mask.view(B, n, 1, 1).to(x.hist.dtype)
    return BehaviourInput(hist=hist, mask=mask, query=x.query, context=x.context)


@dataclasses.dataclass
class ExpertInputs:
    """What each kind of expert reads: the whole history, its recent part, and the K theme
    subsequences stacked theme-major (``[K * B, ...]``, theme k's rows at ``k * B``); None for
    an expert kind switched off. ``balance``: the router's balance term (None without themes)."""

    whole: BehaviourInput | None
    short: BehaviourInput | None
    themes: BehaviourInput | None
    balance: Tensor | None


class MoSRouter(nn.Module):
    """MoS's inputs for one behaviour: the theme router (session vectors scored against learned
    prototypes) and the subsequence each expert reads, for any backbone to run (the encoder
    below, or a model that interleaves its sequence side with other arches)."""

    def __init__(self, cfg: MoSConfig, dim: int, spec: BehaviourSpec) -> None:
        super().__init__()
        if cfg.theme_experts and spec.session is None:
            raise ValueError(f"MoS: behaviour {spec.name!r} has no session field; declare one "
                             "(a field with sessions: {of: <time field>, gap: ...}) or set theme_experts: false")
        self.cfg, self.dim, self.max_sessions = cfg, dim, spec.max_sessions
        K = cfg.themes if cfg.theme_experts else 0
        if K:
            self.session_proj = nn.Linear(spec.num_fields * dim, dim)
            self.session_norm = nn.LayerNorm(dim)
            self.prototypes = nn.Parameter(torch.randn(K, dim) / math.sqrt(dim))
        self.num_experts = int(cfg.global_expert) + int(bool(cfg.short_term)) + K

    def theme_spec(self, spec: BehaviourSpec) -> BehaviourSpec:
        """The behaviour as a theme expert sees it (at most ``max_sessions`` session tokens)."""
        return dataclasses.replace(spec, max_len=spec.max_sessions) if self.cfg.theme_tokens == "sessions" else spec

    def session_means(self, x: BehaviourInput) -> tuple[Tensor, Tensor, Tensor]:
        """(session one-hot ``[B, L, S]``, each session's mean vectors ``[B, S, F, d]``, the
        sessions present ``[B, S]`` bool) of ``x``'s sessions, indexed from the newest."""
        assert x.sessions is not None, "MoS needs session indices (pass Batch.behaviours as ids)"
        B, L = x.mask.shape
        onehot = (x.sessions.unsqueeze(-1) == torch.arange(self.max_sessions, device=x.mask.device)).to(x.hist.dtype)
        count = onehot.sum(dim=1)  # [B, S]
        means = onehot.transpose(1, 2) @ x.hist.reshape(B, L, -1) / count.clamp(min=1).unsqueeze(-1)
        return onehot, means.view(B, self.max_sessions, *x.hist.shape[2:]), count > 0

    def route(self, means: Tensor) -> Tensor:
        """The soft assignment ``[B, S, K]`` of sessions whose mean vectors are ``means``."""
        r = self.session_norm(self.session_proj(means.flatten(2)))
        scores = r @ self.prototypes.t() / (math.sqrt(self.dim) * self.cfg.temperature)
        return torch.softmax(scores, dim=-1)

    def themes(self, x: BehaviourInput) -> tuple[BehaviourInput, Tensor]:
        """The K theme subsequences stacked theme-major, and the balance term."""
        onehot, means, present = self.session_means(x)
        assign = self.route(means)
        K = self.cfg.themes
        hard = self.cfg.routing == "hard"
        # Per session: its weight for each theme, and (hard routing) whether the theme keeps it.
        if hard:
            top = F.one_hot(assign.argmax(dim=-1), K).to(assign.dtype)
            weight, keep = top + assign - assign.detach(), top > 0  # 1 forward on the theme
        else:
            weight, keep = assign, None
        if self.cfg.theme_tokens == "sessions":
            # One token per session, oldest first (index 0 is the newest), real ones first: the
            # tokens, their weights and (hard) what each theme keeps, moved by one permutation.
            old_first = present.flip(1)
            width = math.prod(means.shape[2:])
            parts = [means.flatten(2), weight] + ([keep.to(weight.dtype)] if hard else [])
            moved, mask = left_align(torch.cat(parts, dim=-1).flip(1), old_first, old_first)
            elems, weight = moved[..., :width].view(means.shape), moved[..., width:width + K]
            keep = moved[..., width + K:] > 0.5 if hard else None
        else:
            elems, mask = x.hist, x.mask
            weight = onehot @ weight  # [B, L, K]
            keep = (onehot @ keep.to(onehot.dtype)) > 0 if hard else None
        hists, masks = [], []
        for k in range(K):
            h = elems * weight[:, :, k, None, None]
            h, m = left_align(h, mask, keep[:, :, k]) if hard else (h, mask)
            hists.append(h)
            masks.append(m)
        stacked = BehaviourInput(hist=torch.cat(hists), mask=torch.cat(masks), query=x.query.repeat(K, 1, 1),
                                 context=x.context.repeat(K, 1, 1))
        real = present.to(assign.dtype)
        usage = (assign * real.unsqueeze(-1)).sum(dim=(0, 1)) / real.sum().clamp(min=1)
        balance = self.cfg.balance_weight * (K * (usage ** 2).sum() - 1.0)
        return stacked, balance

    def forward(self, x: BehaviourInput) -> ExpertInputs:
        themes, balance = self.themes(x) if self.cfg.theme_experts else (None, None)
        return ExpertInputs(whole=x if self.cfg.global_expert else None,
                            short=recent(x, self.cfg.short_term) if self.cfg.short_term else None,
                            themes=themes, balance=balance)


def fuse(experts: list[Tensor], gate: Tensor) -> Tensor:
    """The gated sum of the experts' outputs (each ``[B, ...]``) by ``gate [B, E]``."""
    stacked = torch.stack(experts, dim=1)
    return (stacked * gate.view(*gate.shape, *([1] * (stacked.dim() - 2))).to(stacked.dtype)).sum(dim=1)


@register_encoder("mos", MoSConfig)
class MoSEncoder(nn.Module):
    """See the module docstring: global, short-term and theme experts around a backbone."""

    def __init__(self, cfg: MoSConfig, dim: int, spec: BehaviourSpec, num_context: int) -> None:
        super().__init__()
        self.router = MoSRouter(cfg, dim, spec)

        def backbone(spec: BehaviourSpec) -> nn.Module:
            return build_encoder(cfg.backbone, cfg.backbone_options, dim, spec, num_context)

        self.global_expert = backbone(spec) if cfg.global_expert else None
        self.short_expert = backbone(spec) if cfg.short_term else None
        self.theme_expert = backbone(self.router.theme_spec(spec)) if cfg.theme_experts else None
        first = next(e for e in (self.global_expert, self.short_expert, self.theme_expert) if e is not None)
        self.num_outputs, self.out_dim = first.num_outputs, first.out_dim
        self.gate = nn.Linear(num_context * dim, self.router.num_experts)

    def forward(self, x: BehaviourInput) -> EncoderOutput:
        inputs = self.router(x)
        B = x.mask.shape[0]
        experts: list[Tensor] = []
        losses: list[Tensor] = [inputs.balance] if inputs.balance is not None else []
        for expert, inp in ((self.global_expert, inputs.whole), (self.short_expert, inputs.short),
                            (self.theme_expert, inputs.themes)):
            if expert is not None:
                out = expert(inp)
                experts += list(out.tokens.reshape(-1, B, *out.tokens.shape[1:]).unbind(0))
                if out.aux_loss is not None:
                    losses.append(out.aux_loss)
        gate = torch.softmax(self.gate(x.context.flatten(1)), dim=-1)  # [B, E]
        return EncoderOutput(fuse(experts, gate), sum(losses) if losses else None)
