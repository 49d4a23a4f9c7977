"""RankMixer (Zhu et al. 2025, arXiv 2507.15551): tokens, parameter-free token mixing,
per-token FFNs; plus its analytic parameter and FLOP counts and the named variants.

Architecture (``docs/RANKMIXER.md`` in the shared docs has the paper's facts)::

    FeatureEmbedding (numeric_as_field) -> [SequencePooling] -> Tokenizer  -> X0 [B, T, D]
    L x block:   S  = LN(TM(X) + X)          TM: multi-head token mixing, H = T
                 X' = LN(PFFN(S) + S)        PFFN: per-token FFN (or per-token sparse MoE)
    mean over the T tokens -> TaskHeads (one logit per task)

Choices where the paper is silent (all config switches):

* Tokenizer: ``semantic`` (one projection per feature group, groups split/merged to exactly T
  sources) or ``auto`` (concat, pad, chunk); see ``nn/tokenizer.py``.
* Sequence features: masked mean (as embedded) or DIN-style target attention.
* ``expansion`` k: not given by the paper. The named variants use **k = 3**: it puts
  rankmixer-100m at 113M backbone parameters (paper: 107M; k=4 would give 151M), rankmixer-1b
  at 906M (paper: 1.1B; k=4: 1.21B), and the self-attention ablation at +67% FLOPs (paper:
  +71.8%; k=4: +50%).
* ``dropout``: applied to the FFN's output before the residual add (0 = none).
* Ablations: ``token_mixing="none"`` drops the mixing branch (``S = LN(X)``; with
  ``layer_norm=False``, ``S = X``); ``"self_attention"`` replaces it by multi-head self-attention
  (``attention_heads``, default T heads of width D/T, with the usual Q/K/V/out projections);
  ``ffn="shared"``: one FFN for all tokens; ``residual=False``: ``S = LN(TM(X))``,
  ``X' = LN(PFFN(S))``; ``layer_norm=False``: the LNs become identities.
* MoE (``moe``, a :class:`rankmixer.nn.moe.MoEConfig` mapping): each block's PFFN becomes a
  ``PerTokenMoE`` (imported only when ``moe`` is set). Its auxiliary (sparsity / balance) losses
  are summed over the blocks into ``ModelOutput.aux_loss``; its metrics are reported per block
  (``moe/l{i}/...``) plus ``moe/active_ratio``, the mean over the blocks.
* Early exit (``early_exit``, an :class:`EarlyExitConfig`; after Zhou et al. 2025, "The
  Efficiency vs. Accuracy Trade-off: Optimizing RAG-Enhanced LLM Recommender Systems Using
  Multi-Head Early Exit", arXiv 2501.02173): an exit head after every block (mean over the
  block's tokens -> its own TaskHeads); the final head is the last exit. Trained jointly (the
  trainer sums the exits' BCE losses with the config's weights). At inference
  (:meth:`RankMixer.forward_early_exit`) a row stops at the first exit whose confidence passes
  that exit's threshold, and later blocks run only on the rows still in flight. Confidence is
  the paper's criterion, the ratio of the positive to the negative prediction, taken in log
  space and in either direction: ``|logit|`` of the confidence task (``|logit| >= t`` is
  ``max(p, 1-p) >= sigmoid(t)``). ``rankmixer calibrate-exit`` picks the thresholds
  (``rankmixer/early_exit.py``).

Counting (analytic, :func:`rankmixer_param_count`, :func:`rankmixer_flops_per_sample`): FLOPs
are matmul FLOPs (2 per multiply-add), forward, per sample: what
``torch.utils.flop_counter.FlopCounterMode`` counts (element-wise ops, LayerNorm, GELU, softmax,
embedding lookups excluded). A training step costs about 3x the forward. The backbone's leading
terms are the paper's: params ~ 2kLTD^2, FLOPs ~ 4kLTD^2 per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.models.registry import register, register_variant
from rankmixer.nn.embedding import FeatureEmbedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.nn.per_token_ffn import PerTokenFFN, SharedFFN, ffn_hidden
from rankmixer.nn.token_mixing import TokenMixing
from rankmixer.nn.tokenizer import (
    SequencePooling,
    Tokenizer,
    attention_unit_flops,
    attention_unit_params,
    sequence_targets,
    token_input_widths,
)


class EarlyExitConfig(BaseModel):
    """Exit heads after every block. The paper trains its heads jointly but gives no loss
    weights for a ranking model; ``linear`` weighs exit ``i`` (1-based) by ``i`` as PABEE
    (Zhou et al. 2020) does, so deeper, better exits weigh more. Weights are normalised to sum
    to 1, which keeps the loss on the single-head BCE scale."""

    model_config = ConfigDict(extra="forbid")

    loss_weights: Literal["linear", "uniform"] | list[float] = Field(
        default="linear", description="per-exit loss weights: linear (i), uniform, or one number per block"
    )
    head_hidden: list[int] | None = Field(
        default=None, description="hidden widths of the intermediate exits' towers (default: head_hidden)"
    )
    confidence_task: int = Field(default=0, ge=0, description="task whose |logit| decides the exit")

    def weights(self, num_exits: int) -> list[float]:
        if self.loss_weights == "uniform":
            raw = [1.0] * num_exits
        elif self.loss_weights == "linear":
            raw = [float(i + 1) for i in range(num_exits)]
        else:
            raw = [float(w) for w in self.loss_weights]
        total = sum(raw)
        return [w / total for w in raw]


class RankMixerConfig(ModelConfig):
    num_tokens: int = Field(default=8, ge=1, description="T: number of tokens")
    hidden_dim: int = Field(default=64, ge=1, description="D: token width (divisible by T for token mixing)")
    num_layers: int = Field(default=2, ge=0, description="L: number of RankMixer blocks")
    expansion: float = Field(default=2.0, gt=0, description="k: FFN hidden width = round(k * D)")
    activation: str = Field(default="gelu", description="FFN activation")
    tokenizer: Literal["semantic", "auto"] = Field(
        default="semantic", description="semantic: one projection per feature group; auto: concat and chunk"
    )
    sequence_pooling: Literal["mean", "target_attention"] = Field(
        default="mean", description="how sequence features become fields"
    )
    sequence_targets: dict[str, str] = Field(
        default={}, description="target attention: sequence -> target feature (default: its share_with)"
    )
    attention_hidden: list[int] = Field(default=[32], description="hidden widths of the DIN activation unit")
    attention_softmax: bool = Field(default=True, description="softmax-normalise target-attention weights")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on the FFN output")
    ffn_impl: Literal["auto", "bmm", "fused", "split"] = Field(default="auto", description="per-token FFN implementation")
    moe: Any = Field(default=None, description="MoEConfig mapping: per-token sparse MoE instead of the PFFN")
    token_mixing: Literal["mixing", "none", "self_attention"] = Field(default="mixing", description="ablation switch")
    attention_heads: int | None = Field(default=None, ge=1, description="self_attention heads (default T)")
    ffn: Literal["per_token", "shared"] = Field(default="per_token", description="ablation switch")
    residual: bool = Field(default=True, description="ablation switch: skip connections")
    layer_norm: bool = Field(default=True, description="ablation switch: post-norm LayerNorms")
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")
    early_exit: EarlyExitConfig | None = Field(default=None, description="exit heads after every block")

    @field_validator("moe", mode="before")
    @classmethod
    def _moe_config(cls, v: Any) -> Any:
        if v is None:
            return None
        from rankmixer.nn.moe import MoEConfig  # lazy: only MoE configs need the module

        return v if isinstance(v, MoEConfig) else MoEConfig.model_validate(v)

    @model_validator(mode="after")
    def _check(self) -> RankMixerConfig:
        if self.token_mixing == "mixing" and self.hidden_dim % self.num_tokens:
            raise ValueError(
                f"token mixing needs hidden_dim divisible by num_tokens, got {self.hidden_dim} and {self.num_tokens}"
            )
        if self.token_mixing == "self_attention" and self.hidden_dim % self.heads:
            raise ValueError(f"self_attention needs hidden_dim divisible by attention_heads ({self.heads})")
        if self.moe is not None and self.ffn != "per_token":
            raise ValueError("moe replaces the per-token FFN; it needs ffn=per_token")
        ee = self.early_exit
        if ee is not None and isinstance(ee.loss_weights, list):
            n = max(self.num_layers, 1)  # exits: one per block; L = 0 still has the final head
            if len(ee.loss_weights) != n or min(ee.loss_weights) < 0 or sum(ee.loss_weights) <= 0:
                raise ValueError(
                    f"early_exit.loss_weights needs one non-negative weight per exit ({n}), "
                    f"not all zero; got {ee.loss_weights}"
                )
        return self

    @property
    def exit_head_hidden(self) -> list[int]:
        ee = self.early_exit
        return self.head_hidden if ee is None or ee.head_hidden is None else ee.head_hidden

    @property
    def heads(self) -> int:
        return self.attention_heads or self.num_tokens

    @property
    def ffn_hidden(self) -> int:
        return ffn_hidden(self.hidden_dim, self.expansion)


class SelfAttentionMixing(nn.Module):
    """The self-attention ablation of token mixing: ``MultiheadAttention(x, x, x)``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


class RankMixerBlock(nn.Module):
    """``S = LN(TM(X) + X); X' = LN(PFFN(S) + S)`` with the config's ablation switches.
    ``forward(x) -> (x', aux_loss or None, metrics)``."""

    def __init__(self, cfg: RankMixerConfig, index: int = 0) -> None:
        super().__init__()
        T, D = cfg.num_tokens, cfg.hidden_dim
        self.residual = cfg.residual
        if cfg.token_mixing == "mixing":
            self.mixer: nn.Module | None = TokenMixing(T, D)
        elif cfg.token_mixing == "self_attention":
            self.mixer = SelfAttentionMixing(D, cfg.heads)
        else:
            self.mixer = None
        self.norm1 = nn.LayerNorm(D) if cfg.layer_norm else nn.Identity()
        self.norm2 = nn.LayerNorm(D) if cfg.layer_norm else nn.Identity()
        self.is_moe = cfg.moe is not None
        if self.is_moe:
            from rankmixer.nn.moe import PerTokenMoE  # lazy: only MoE models need the module

            self.ffn: nn.Module = PerTokenMoE(T, D, cfg.expansion, cfg.moe, metric_prefix=f"moe/l{index}")
        elif cfg.ffn == "per_token":
            self.ffn = PerTokenFFN(T, D, cfg.expansion, cfg.activation, impl=cfg.ffn_impl)
        else:
            self.ffn = SharedFFN(D, cfg.expansion, cfg.activation)
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, dict[str, float]]:
        if self.mixer is None:
            s = self.norm1(x)
        else:
            m = self.mixer(x)
            s = self.norm1(m + x if self.residual else m)
        aux, metrics = None, {}
        if self.is_moe:
            v, aux, metrics = self.ffn(s)
        else:
            v = self.ffn(s)
        v = self.dropout(v)
        return self.norm2(v + s if self.residual else v), aux, metrics


class RankMixerBackbone(nn.Module):
    """``L`` RankMixer blocks on ``[B, T, D]`` tokens; ``forward(x) -> (x, aux_loss or None,
    metrics)``. Separate from the model so it can be built without a feature map (e.g. on the
    meta device, to count the parameters of the big variants)."""

    def __init__(self, cfg: RankMixerConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(RankMixerBlock(cfg, i) for i in range(cfg.num_layers))
        self.is_moe = cfg.moe is not None

    def forward(
        self, x: Tensor, after_block: Callable[[int, Tensor], None] | None = None
    ) -> tuple[Tensor, Tensor | None, dict[str, float]]:
        """``after_block(i, x)`` (if given) sees every block's output (early-exit heads)."""
        aux: Tensor | None = None
        metrics: dict[str, float] = {}
        ratios = []
        for i, block in enumerate(self.blocks):
            x, a, m = block(x)
            if after_block is not None:
                after_block(i, x)
            if a is not None:
                aux = a if aux is None else aux + a
            metrics.update(m)
            if f"moe/l{i}/active_ratio" in m:
                ratios.append(m[f"moe/l{i}/active_ratio"])
        if ratios:
            metrics["moe/active_ratio"] = sum(ratios) / len(ratios)
        return x, aux, metrics


@register("rankmixer", RankMixerConfig)
class RankMixer(nn.Module):
    """RankMixer: feature tokens, multi-head token mixing and per-token FFNs (Zhu et al. 2025, "RankMixer: Scaling Up Ranking Models in Industrial Recommenders").

    See the module docstring for the block, the tokenizer, the ablation switches and the MoE
    variant.
    """

    def __init__(self, feature_map: FeatureMap, cfg: RankMixerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(feature_map, d, numeric_as_field=True)
        names = self.embedding.field_names
        pooling = None
        if cfg.sequence_pooling == "target_attention":
            pooling = SequencePooling(
                feature_map, names, d, "target_attention", cfg.sequence_targets, cfg.attention_hidden,
                cfg.attention_softmax,
            )
        self.tokenizer = Tokenizer(feature_map, names, d, cfg.num_tokens, cfg.hidden_dim, cfg.tokenizer, pooling)
        self.backbone = RankMixerBackbone(cfg)
        self.heads = TaskHeads(cfg.hidden_dim, feature_map.num_tasks, cfg.head_hidden)
        # Early exit: heads after blocks 1 .. L-1; after block L the final head is the last exit.
        self.exit_heads: nn.ModuleList | None = None
        if cfg.early_exit is not None:
            self.exit_heads = nn.ModuleList(
                TaskHeads(cfg.hidden_dim, feature_map.num_tasks, cfg.exit_head_hidden)
                for _ in range(max(cfg.num_layers - 1, 0))
            )
            if cfg.early_exit.confidence_task >= feature_map.num_tasks:
                raise ValueError(
                    f"early_exit.confidence_task={cfg.early_exit.confidence_task} but the data has "
                    f"{feature_map.num_tasks} task(s)"
                )

    @property
    def num_exits(self) -> int:
        """Exits of an early-exit model (one per block, at least the final head); 1 otherwise."""
        return 1 if self.exit_heads is None else len(self.exit_heads) + 1

    def tokens(self, batch: Batch) -> Tensor:
        """The input tokens ``X0 [B, T, D]``."""
        return self.tokenizer(self.embedding(batch))

    def forward(self, batch: Batch) -> ModelOutput:
        if self.exit_heads is None:
            x, aux, metrics = self.backbone(self.tokens(batch))
            return ModelOutput(logits=self.heads(x.mean(dim=1)), aux_loss=aux, metrics=metrics)
        exits: list[Tensor] = []
        heads = self.exit_heads

        def exit_head(i: int, h: Tensor) -> None:
            if i < len(heads):
                exits.append(heads[i](h.mean(dim=1)))

        x, aux, metrics = self.backbone(self.tokens(batch), after_block=exit_head)
        logits = self.heads(x.mean(dim=1))
        exits.append(logits)
        return ModelOutput(logits=logits, aux_loss=aux, metrics=metrics, exit_logits=exits,
                           exit_loss_weights=self.cfg.early_exit.weights(len(exits)))

    @torch.no_grad()
    def forward_early_exit(self, batch: Batch, thresholds: Sequence[float | None]) -> EarlyExitOutput:
        """Inference with early exit: after block ``i`` (of the first L-1), the rows whose
        confidence ``|logit[:, confidence_task]|`` is ``>= thresholds[i]`` take that exit's
        logits and leave; only the remaining rows (indexed, not masked) enter block ``i+1``.
        ``None`` (or inf) never exits there, and skips that exit head's compute. Rows still in
        flight after block L take the final head. With no exit taken, the logits are those of
        ``forward`` in eval mode."""
        if self.exit_heads is None:
            raise ValueError("this RankMixer has no exit heads (set model.early_exit)")
        n_inner = len(self.exit_heads)
        if len(thresholds) != n_inner:
            raise ValueError(f"need {n_inner} thresholds (one per exit before the final head), got {len(thresholds)}")
        task = self.cfg.early_exit.confidence_task
        x = self.tokens(batch)
        B = x.shape[0]
        logits = x.new_empty(B, self.heads.num_tasks)
        exit_index = torch.full((B,), n_inner, dtype=torch.long, device=x.device)
        rows = torch.arange(B, device=x.device)  # original index of each row still in flight
        rows_per_block: list[int] = []
        for i, block in enumerate(self.backbone.blocks):
            rows_per_block.append(int(rows.numel()))
            x = block(x)[0]
            t = thresholds[i] if i < n_inner else None
            if t is None or math.isinf(t):
                continue
            z = self.exit_heads[i](x.mean(dim=1))
            done = z[:, task].abs() >= t
            if bool(done.any()):
                logits[rows[done]] = z[done].to(logits.dtype)
                exit_index[rows[done]] = i
                keep = ~done
                rows, x = rows[keep], x[keep]
                if rows.numel() == 0:
                    break
        rows_per_block += [0] * (len(self.backbone.blocks) - len(rows_per_block))
        if rows.numel():
            logits[rows] = self.heads(x.mean(dim=1)).to(logits.dtype)
        return EarlyExitOutput(logits=logits, exit_index=exit_index, rows_per_block=rows_per_block)


@dataclass
class EarlyExitOutput:
    """logits ``[B, n_tasks]`` (each row's from the exit it took); exit_index ``[B]`` (0-based;
    ``num_exits - 1`` = the final head); rows_per_block: rows that entered each block."""

    logits: Tensor
    exit_index: Tensor
    rows_per_block: list[int]


# ------------------------------------------------------------------------------------------
# analytic counts
# ------------------------------------------------------------------------------------------
def _as_config(cfg: RankMixerConfig | dict) -> RankMixerConfig:
    return cfg if isinstance(cfg, RankMixerConfig) else RankMixerConfig.model_validate(cfg)


def _field_names(feature_map: FeatureMap, dim: int) -> tuple[list[str], int]:
    """(field names, fused embedding rows) exactly as the model's FeatureEmbedding has them
    (built on the meta device: no memory)."""
    with torch.device("meta"):
        emb = FeatureEmbedding(feature_map, dim, numeric_as_field=True)
    return list(emb.field_names), emb.num_rows


def _towers(in_dim: int, hidden: Sequence[int], num_tasks: int) -> tuple[int, int]:
    """(params, matmul FLOPs per sample) of TaskHeads."""
    if not hidden:
        return in_dim * num_tasks + num_tasks, 2 * in_dim * num_tasks
    widths = [in_dim, *hidden, 1]
    pairs = list(zip(widths[:-1], widths[1:]))
    return num_tasks * sum(a * b + b for a, b in pairs), num_tasks * 2 * sum(a * b for a, b in pairs)


def _moe_parts(cfg: RankMixerConfig) -> tuple[int, int, int]:
    """(experts E, expert hidden H, routers per token) of the MoE FFN."""
    m = cfg.moe
    H = max(1, round(cfg.expansion * cfg.hidden_dim * m.expert_hidden_mult))
    return m.num_experts, H, 2 if m.routing == "relu_dtsi" else 1


def _inputs(cfg: RankMixerConfig, inputs: FeatureMap | Sequence[int] | None, num_tasks: int | None):
    """(token input widths, embedding params, attention units [(params, flops)], tasks)."""
    if inputs is None:
        return [], 0, [], num_tasks or 1
    if isinstance(inputs, FeatureMap):
        names, rows = _field_names(inputs, cfg.embedding_dim)
        widths = token_input_widths(cfg.tokenizer, names, inputs.feature_groups, cfg.embedding_dim, cfg.num_tokens)
        units = []
        if cfg.sequence_pooling == "target_attention":
            for s in sequence_targets(inputs, names, cfg.sequence_targets):
                L = inputs.feature(s).max_len
                units.append((attention_unit_params(cfg.embedding_dim, cfg.attention_hidden),
                              attention_unit_flops(cfg.embedding_dim, cfg.attention_hidden, L)))
        return widths, rows * cfg.embedding_dim, units, num_tasks or inputs.num_tasks
    widths = list(inputs)
    if len(widths) != cfg.num_tokens:
        raise ValueError(f"got {len(widths)} token input widths for {cfg.num_tokens} tokens")
    return widths, 0, [], num_tasks or 1


def rankmixer_param_count(
    cfg: RankMixerConfig | dict,
    inputs: FeatureMap | Sequence[int] | None = None,
    num_tasks: int | None = None,
) -> dict[str, int]:
    """Parameters of a RankMixer, by part, from the config alone.

    ``inputs``: the feature map (everything counted, as the built model has it), or the ``T``
    token input widths (tokenizer + backbone + heads; no embedding, no sequence attention), or
    None (backbone and heads only). Keys: ``embedding``, ``sequence_pooling``, ``tokenizer``,
    ``blocks`` (the backbone), ``heads``, ``dense`` (all but the embedding tables), ``total``,
    and ``paper_estimate`` = 2kLTD^2 (the paper's leading term, for comparison); with early
    exit also ``exit_heads`` (the L-1 intermediate exits; in ``dense``).
    """
    cfg = _as_config(cfg)
    widths, emb, units, tasks = _inputs(cfg, inputs, num_tasks)
    T, D, L, H = cfg.num_tokens, cfg.hidden_dim, cfg.num_layers, cfg.ffn_hidden
    per_block = 4 * D if cfg.layer_norm else 0
    if cfg.token_mixing == "self_attention":
        per_block += 4 * D * D + 4 * D
    if cfg.moe is not None:
        E, He, R = _moe_parts(cfg)
        per_block += T * E * (2 * D * He + He + D) + R * T * (D * E + E)
    elif cfg.ffn == "per_token":
        per_block += T * (2 * D * H + H + D)
    else:
        per_block += 2 * D * H + H + D
    heads, _ = _towers(D, cfg.head_hidden, tasks)
    out = {
        "embedding": emb,
        "sequence_pooling": sum(p for p, _ in units),
        "tokenizer": sum(w * D + D for w in widths),
        "blocks": L * per_block,
        "heads": heads,
    }
    out["dense"] = out["sequence_pooling"] + out["tokenizer"] + out["blocks"] + out["heads"]
    if cfg.early_exit is not None:
        out["exit_heads"] = max(L - 1, 0) * _towers(D, cfg.exit_head_hidden, tasks)[0]
        out["dense"] += out["exit_heads"]
    out["total"] = out["dense"] + emb
    out["paper_estimate"] = round(2 * cfg.expansion * L * T * D * D)
    return out


def rankmixer_flops_per_sample(
    cfg: RankMixerConfig | dict,
    inputs: FeatureMap | Sequence[int] | None = None,
    num_tasks: int | None = None,
    active_ratio: float | None = None,
) -> dict[str, int]:
    """Forward matmul FLOPs per sample (2 per multiply-add), by part; ``inputs`` as in
    :func:`rankmixer_param_count`. Keys: ``sequence_pooling``, ``tokenizer``, ``blocks``,
    ``heads``, ``forward`` (their sum), ``train`` (~3x forward: backward costs two matmuls per
    forward matmul), ``paper_estimate`` = 4kLTD^2.

    MoE: ``blocks`` counts what the training forward computes (every expert, both DTSI routers,
    and the ``[E] x [E, D]`` gate-times-bias matmul of ``PerTokenMoE.dense_experts``);
    ``blocks_active`` / ``forward_active`` count sparse inference with ``active_ratio`` of the
    experts (default: the config's ``target_active_ratio``) and the inference router only.

    Early exit: ``exit_heads`` (the L-1 intermediate exits, which training computes for every
    row) is in ``forward``; :func:`rankmixer_exit_flops` counts inference that stops early.
    """
    cfg = _as_config(cfg)
    widths, _, units, tasks = _inputs(cfg, inputs, num_tasks)
    T, D, L, H = cfg.num_tokens, cfg.hidden_dim, cfg.num_layers, cfg.ffn_hidden
    mix = 8 * T * D * D + 4 * T * T * D if cfg.token_mixing == "self_attention" else 0
    _, head_flops = _towers(D, cfg.head_hidden, tasks)
    out = {
        "sequence_pooling": sum(f for _, f in units),
        "tokenizer": 2 * D * sum(widths),
        "heads": head_flops,
    }
    if cfg.moe is not None:
        E, He, R = _moe_parts(cfg)
        ratio = cfg.moe.target_active_ratio if active_ratio is None else active_ratio
        # dense path: all experts, the routers, and the gate-weighted bias sum_j G_j b2_j (a bmm)
        out["blocks"] = L * (mix + 4 * T * E * D * He + R * 2 * T * D * E + 2 * T * E * D)
        out["blocks_active"] = L * (mix + round(4 * T * E * D * He * ratio) + 2 * T * D * E)
    else:
        out["blocks"] = L * (mix + 4 * T * D * H)
    rest = out["sequence_pooling"] + out["tokenizer"] + out["heads"]
    if cfg.early_exit is not None:
        out["exit_heads"] = max(L - 1, 0) * _towers(D, cfg.exit_head_hidden, tasks)[1]
        rest += out["exit_heads"]
    out["forward"] = rest + out["blocks"]
    if "blocks_active" in out:
        out["forward_active"] = rest + out["blocks_active"]
    out["train"] = 3 * out["forward"]
    out["paper_estimate"] = round(4 * cfg.expansion * L * T * D * D)
    return out


def rankmixer_exit_flops(
    cfg: RankMixerConfig | dict,
    inputs: FeatureMap | Sequence[int] | None = None,
    num_tasks: int | None = None,
    active_ratio: float | None = None,
) -> dict[str, Any]:
    """Inference FLOPs per sample of an early-exit RankMixer, by where the row leaves.

    ``per_exit[i]``: a row that takes exit ``i`` (0-based; the last is the final head) costs the
    tokenizer (and sequence pooling), ``i + 1`` blocks and the exit heads evaluated on the way
    (``1 .. i+1`` of them; the final exit also pays the final head). ``no_exit``: the model
    run without evaluating any intermediate head (all thresholds off), the baseline. The parts:
    ``pre`` (before the blocks), ``block``, ``exit_head``, ``final_head``. MoE blocks count
    sparse inference (``blocks_active``)."""
    cfg = _as_config(cfg)
    if cfg.early_exit is None:
        raise ValueError("the config has no early_exit")
    f = rankmixer_flops_per_sample(cfg, inputs, num_tasks, active_ratio)
    L = cfg.num_layers
    per_block = f.get("blocks_active", f["blocks"]) / max(L, 1)
    exit_head = f["exit_heads"] // max(L - 1, 1)
    pre = f["sequence_pooling"] + f["tokenizer"]
    per_exit = [round(pre + (i + 1) * per_block + (i + 1) * exit_head) for i in range(L - 1)]
    per_exit.append(round(pre + L * per_block + (L - 1) * exit_head + f["heads"]))
    return {"per_exit": per_exit, "no_exit": round(pre + L * per_block + f["heads"]),
            "pre": pre, "block": per_block, "exit_head": exit_head, "final_head": f["heads"]}


def describe(name: str, overrides: dict | None = None, feature_map: FeatureMap | None = None) -> dict[str, Any]:
    """Config, parameter counts and FLOPs/sample of a registered RankMixer (variant), with the
    parameter count checked against a module built on the meta device (never in memory)."""
    from rankmixer.models import registry

    cfg = registry.parse_config(name, overrides or {})
    if not isinstance(cfg, RankMixerConfig):
        raise ValueError(f"{name!r} is not a RankMixer model")
    with torch.device("meta"):
        module = registry.build_model(name, feature_map, cfg) if feature_map is not None else RankMixerBackbone(cfg)
    counted = sum(p.numel() for p in module.parameters())
    params = rankmixer_param_count(cfg, feature_map)
    flops = rankmixer_flops_per_sample(cfg, feature_map)
    expected = params["total"] if feature_map is not None else params["blocks"]
    if counted != expected:  # pragma: no cover - guarded by the tests
        raise RuntimeError(f"analytic parameter count {expected:,} != built module's {counted:,}")
    return {"name": name, "config": cfg.model_dump(mode="json"), "params": params, "flops": flops,
            "meta_module_params": counted}


# ------------------------------------------------------------------------------------------
# named variants
# ------------------------------------------------------------------------------------------
_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"embedding_dim": 8, "num_tokens": 8, "hidden_dim": 64, "num_layers": 2, "expansion": 2},
    "100m": {"num_tokens": 16, "hidden_dim": 768, "num_layers": 2, "expansion": 3},
    "1b": {"num_tokens": 32, "hidden_dim": 1536, "num_layers": 2, "expansion": 3},
}
# MoE variants: the paper's 8 experts at 1/8 activation for the big ones (8x the FFN parameters,
# the dense model's compute at inference); 4 experts at 1/4 for tiny.
_MOE: dict[str, dict[str, Any]] = {
    "tiny": {"num_experts": 4, "routing": "relu_dtsi", "target_active_ratio": 0.25},
    "100m": {"num_experts": 8, "routing": "relu_dtsi", "target_active_ratio": 0.125},
    "1b": {"num_experts": 8, "routing": "relu_dtsi", "target_active_ratio": 0.125},
}
for _size, _d in _SIZES.items():
    _dims = f"T={_d['num_tokens']}, D={_d['hidden_dim']}, L={_d['num_layers']}, k={_d['expansion']}"
    register_variant(f"rankmixer-{_size}", "rankmixer", _d, f"RankMixer {_size}: {_dims}")
    _m = _MOE[_size]
    register_variant(
        f"rankmixer-{_size}-moe", "rankmixer", {**_d, "moe": _m},
        f"RankMixer {_size}, sparse MoE FFN: {_dims}, {_m['num_experts']} experts, "
        f"{_m['routing']}, target active {_m['target_active_ratio']}",
    )

__all__ = [
    "RankMixer", "RankMixerBackbone", "RankMixerBlock", "RankMixerConfig", "SelfAttentionMixing",
    "EarlyExitConfig", "EarlyExitOutput", "describe", "rankmixer_exit_flops", "rankmixer_flops_per_sample",
    "rankmixer_param_count",
]
