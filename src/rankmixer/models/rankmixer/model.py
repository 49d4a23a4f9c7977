"""RankMixer (Zhu et al. 2025, "RankMixer: Scaling Up Ranking Models in Industrial
Recommenders", arXiv 2507.15551): feature tokens, parameter-free token mixing, per-token FFNs.

::

    FeatureEmbedding (numeric_as_field) -> [SequencePooling] -> Tokenizer  -> X0 [B, T, D]
    L x block:   S  = LN(TM(X) + X)          TM: multi-head token mixing, H = T
                 X' = LN(PFFN(S) + S)        PFFN: per-token FFN (or per-token sparse MoE)
    mean over the T tokens -> TaskHeads (one logit per task)

``norm_placement`` moves the norms: ``post`` (the paper, above), ``pre`` (``S = X + TM(N(X))``,
``X' = S + PFFN(N(S))``, one final norm after the last block) or ``none``; ``norm`` picks
LayerNorm or RMSNorm (``nn/norm.py``). ``layer_norm=False`` is the old spelling of
``norm_placement=none``. ``block="mix_revert"`` swaps the block for TokenMixer-Large's
mixing-and-reverting block (``mix_revert.py``); ``inter_residual`` and ``aux_loss_weight`` add
its inter-layer residuals and deep supervision (the ``tokenmixer-large`` variants).
``first_order`` (not in the paper) adds DeepFM's per-feature linear term to every logit: an
isolating ablation for data whose signal is mostly first-order (``docs/benchmarks.md``).

Where the paper is silent, each choice is a config switch (``docs/rankmixer.md`` gives the
reasons): the tokenizer (``semantic``: one projection per feature group; ``auto``: concat, pad,
chunk; see ``nn/tokenizer.py``), sequence pooling (masked mean or DIN-style target attention),
the expansion k, ``dropout`` on the FFN output before the residual add, and the ablations:
``token_mixing="none"`` (``S = LN(X)``) or ``"self_attention"`` (multi-head self-attention,
default T heads), ``ffn="shared"`` (one FFN for all tokens), ``residual=False``
(``S = LN(TM(X))``, ``X' = LN(PFFN(S))``), ``layer_norm=False`` (the LNs become identities).

``moe`` (a :class:`rankmixer.nn.moe.MoEConfig` mapping) turns each block's PFFN into a
``PerTokenMoE`` (imported only when set); its auxiliary losses are summed over the blocks into
``ModelOutput.aux_loss``, its metrics reported per block (``moe/l{i}/...``) plus
``moe/active_ratio``, their mean. ``early_exit`` adds exit heads after every block
(``early_exit.py`` in this package). The analytic parameter and FLOP counts are in
``counting.py``, the named variants in ``variants.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput, add_losses
from rankmixer.models.rankmixer.sequence_tokens import SequenceFields
from rankmixer.models.rankmixer.early_exit import EarlyExitConfig, EarlyExitOutput, forward_early_exit
from rankmixer.models.registry import register
from rankmixer.nn.embedding import FeatureEmbedding
from rankmixer.nn.heads import TaskHeads
from rankmixer.models.rankmixer.sublayers import make_block_norm, make_ffn, run_ffn
from rankmixer.nn.norm import make_norm
from rankmixer.nn.per_token_ffn import ffn_hidden
from rankmixer.nn.token_mixing import TokenMixing
from rankmixer.nn.tokenizer import SequencePooling, Tokenizer


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
    sequence_module: str = Field(
        default="mean", description="encoder of behaviour sequences, whose outputs become fields "
        "(mean | din | dien | interformer | pyramid; rankmixer.nn.sequence)"
    )
    sequence_options: dict[str, Any] = Field(default={}, description="the sequence module's config")
    attention_hidden: list[int] = Field(default=[32], description="hidden widths of the DIN activation unit")
    attention_softmax: bool = Field(default=True, description="softmax-normalise target-attention weights")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="dropout on the FFN output")
    ffn_impl: Literal["auto", "bmm", "fused", "split"] = Field(default="auto", description="per-token FFN implementation")
    moe: Any = Field(default=None, description="MoEConfig mapping: per-token sparse MoE instead of the PFFN")
    token_mixing: Literal["mixing", "none", "self_attention"] = Field(default="mixing", description="ablation switch")
    attention_heads: int | None = Field(default=None, ge=1, description="self_attention heads (default T)")
    ffn: Literal["per_token", "shared"] = Field(default="per_token", description="ablation switch")
    residual: bool = Field(default=True, description="ablation switch: skip connections")
    layer_norm: bool = Field(default=True, description="old spelling: false == norm_placement none")
    norm_placement: Literal["post", "pre", "none"] = Field(
        default="post", description="post: X' = N(f(X) + X) (paper); pre: X' = X + f(N(X)), final norm; none"
    )
    norm: Literal["layernorm", "rmsnorm"] = Field(default="layernorm", description="normalisation layer")
    block: Literal["rankmixer", "mix_revert"] = Field(
        default="rankmixer", description="mix_revert: TokenMixer-Large's mixing-and-reverting block"
    )
    inter_residual: int = Field(
        default=0, ge=0, description="k > 0: block j (k, 2k, .. < L) adds the output of block j - k"
    )
    aux_loss_weight: float = Field(
        default=0.0, ge=0.0, description="deep supervision: weight of an extra head's BCE at each inter-residual"
    )
    head_hidden: list[int] = Field(default=[], description="hidden widths of each task's tower")
    first_order: bool = Field(
        default=False, description="add a per-feature linear term (1-dim embeddings, DeepFM's) to every logit; "
        "not in the paper: an isolating ablation for first-order data"
    )
    early_exit: EarlyExitConfig | None = Field(default=None, description="exit heads after every block")

    @field_validator("moe", mode="before")
    @classmethod
    def _moe_config(cls, v: Any) -> Any:
        if v is None:
            return None
        from rankmixer.nn.moe import MoEConfig  # lazy: only MoE configs need the module

        return v if isinstance(v, MoEConfig) else MoEConfig.model_validate(v)

    @model_validator(mode="before")
    @classmethod
    def _layer_norm_alias(cls, data: Any) -> Any:
        """``layer_norm`` and ``norm_placement`` name one setting: either may be given, both
        must agree, and the validated config carries both consistently."""
        if not isinstance(data, dict):
            return data
        placement, ln = data.get("norm_placement"), data.get("layer_norm")
        if ln is False:
            if placement not in (None, "none"):
                raise ValueError(f"layer_norm=false contradicts norm_placement={placement!r}")
            return {**data, "norm_placement": "none"}
        if ln is True and placement == "none":
            raise ValueError("layer_norm=true contradicts norm_placement='none'")
        if isinstance(placement, str) and ln is None:
            return {**data, "layer_norm": placement != "none"}
        return data

    @model_validator(mode="after")
    def _check(self) -> RankMixerConfig:
        if self.block == "mix_revert" and self.token_mixing != "mixing":
            raise ValueError("block=mix_revert mixes and reverts tokens; it needs token_mixing=mixing")
        if self.aux_loss_weight > 0:
            if not self.aux_points:
                raise ValueError("aux_loss_weight > 0 needs inter_residual = k with 0 < k < num_layers")
            if self.early_exit is not None:
                raise ValueError("aux_loss_weight and early_exit both set the exit heads; choose one")
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
    def aux_points(self) -> list[int]:
        """Blocks (1-based) whose output gets the inter-layer residual (and, with
        ``aux_loss_weight``, an auxiliary head): ``k, 2k, ...`` below ``L``."""
        k = self.inter_residual
        return list(range(k, self.num_layers, k)) if k else []

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
    """``S = N(TM(X) + X); X' = N(PFFN(S) + S)`` (post-norm), or pre-norm
    ``S = X + TM(N(X)); X' = S + PFFN(N(S))``, with the config's ablation switches.
    ``forward(x) -> (x', aux_loss or None, metrics)``. ``none`` runs the pre-norm order with
    identity norms (the two orders agree without norms)."""

    def __init__(self, cfg: RankMixerConfig, index: int = 0) -> None:
        super().__init__()
        T, D = cfg.num_tokens, cfg.hidden_dim
        self.residual = cfg.residual
        self.post = cfg.norm_placement == "post"
        if cfg.token_mixing == "mixing":
            self.mixer: nn.Module | None = TokenMixing(T, D)
        elif cfg.token_mixing == "self_attention":
            self.mixer = SelfAttentionMixing(D, cfg.heads)
        else:
            self.mixer = None
        self.norm1 = make_block_norm(cfg)
        self.norm2 = make_block_norm(cfg)
        self.is_moe = cfg.moe is not None
        self.ffn = make_ffn(cfg, f"moe/l{index}")
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None, dict[str, float]]:
        post = self.post
        if self.mixer is None:
            s = self.norm1(x) if post else x
        else:
            m = self.mixer(x if post else self.norm1(x))
            s = m + x if self.residual else m
            s = self.norm1(s) if post else s
        v, aux, metrics = run_ffn(self.ffn, self.is_moe, s if post else self.norm2(s))
        v = self.dropout(v)
        out = v + s if self.residual else v
        return (self.norm2(out) if post else out), aux, metrics


class RankMixerBackbone(nn.Module):
    """``L`` blocks on ``[B, T, D]`` tokens; ``forward(x) -> (x, aux_loss or None, metrics)``.
    Separate from the model so it can be built without a feature map (e.g. on the meta device,
    to count the parameters of the big variants).

    Inter-layer residuals (``inter_residual = k``): the output of block ``j`` in ``k, 2k, ...``
    below ``L`` becomes ``X_j + X_{j-k}`` (``X_0``: the input tokens), never after the last block.
    Pre-norm ends with one norm (``final_norm``) on the output and on what ``after_block`` sees."""

    def __init__(self, cfg: RankMixerConfig) -> None:
        super().__init__()
        if cfg.block == "mix_revert":
            from rankmixer.models.rankmixer.mix_revert import MixRevertBlock  # lazy: imports this module

            self.blocks = nn.ModuleList(MixRevertBlock(cfg, i) for i in range(cfg.num_layers))
        else:
            self.blocks = nn.ModuleList(RankMixerBlock(cfg, i) for i in range(cfg.num_layers))
        self.final_norm = make_norm(cfg.norm, cfg.hidden_dim) if cfg.norm_placement == "pre" else nn.Identity()
        self.inter_residual = cfg.inter_residual
        self.aux_points = set(cfg.aux_points)
        self.is_moe = cfg.moe is not None

    def step(self, i: int, x: Tensor, recent: list[Tensor]) -> tuple[Tensor, list[Tensor], Tensor | None, dict]:
        """Block ``i`` on ``x`` with its inter-layer residual: ``(x', recent', aux, metrics)``.
        ``recent`` holds ``X_{j-k} .. X_{j-1}``, what an inter-layer residual may add (``[X_0]``
        before the first block); early exit drops rows from ``x`` and ``recent`` alike."""
        x, aux, metrics = self.blocks[i](x)
        k = self.inter_residual
        if i + 1 in self.aux_points:
            x = x + recent[-k]
        return x, ([*recent, x][-k:] if k else recent), aux, metrics

    def forward(
        self, x: Tensor, after_block: Callable[[int, Tensor], None] | None = None
    ) -> tuple[Tensor, Tensor | None, dict[str, float]]:
        """``after_block(i, x)`` (if given) sees every block's output (early-exit heads)."""
        aux: Tensor | None = None
        metrics: dict[str, float] = {}
        ratios = []
        recent = [x]
        for i in range(len(self.blocks)):
            x, recent, a, m = self.step(i, x, recent)
            if after_block is not None:
                after_block(i, self.final_norm(x))
            aux = add_losses(aux, a)
            metrics.update(m)
            ratios += [v for name, v in m.items() if name.endswith("/active_ratio")]
        if ratios:
            metrics["moe/active_ratio"] = sum(ratios) / len(ratios)
        return self.final_norm(x), aux, metrics


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
        self.embedding = FeatureEmbedding(feature_map, d, numeric_as_field=True, pool_behaviours=False)
        names = self.embedding.field_names
        pooling = None
        if cfg.sequence_pooling == "target_attention":
            pooling = SequencePooling(
                feature_map, names, d, "target_attention", cfg.sequence_targets, cfg.attention_hidden,
                cfg.attention_softmax,
            )
        # Behaviour sequences: encoded by the sequence module, appended as fields of their own.
        self.sequence: SequenceFields | None = None
        groups = None
        if feature_map.behaviours:
            self.sequence = SequenceFields(feature_map, names, d, cfg.sequence_module, cfg.sequence_options)
            names, groups = [*names, *self.sequence.names], self.sequence.feature_groups
        self.tokenizer = Tokenizer(feature_map, names, d, cfg.num_tokens, cfg.hidden_dim, cfg.tokenizer, pooling,
                                   groups)
        self.backbone = RankMixerBackbone(cfg)
        self.heads = TaskHeads(cfg.hidden_dim, feature_map.num_tasks, cfg.head_hidden)
        # first_order: one learned weight per feature value, summed into every logit (as in DeepFM).
        self.first_order = FeatureEmbedding(feature_map, 1, numeric_as_field=True) if cfg.first_order else None
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
        # Deep supervision (TokenMixer-Large's auxiliary loss): one head per inter-residual point.
        self.aux_heads: nn.ModuleList | None = None
        if cfg.aux_loss_weight > 0:
            self.aux_heads = nn.ModuleList(
                TaskHeads(cfg.hidden_dim, feature_map.num_tasks, cfg.head_hidden) for _ in cfg.aux_points
            )

    @property
    def num_exits(self) -> int:
        """Exits of an early-exit model (one per block, at least the final head); 1 otherwise."""
        return 1 if self.exit_heads is None else len(self.exit_heads) + 1

    def tokens(self, batch: Batch) -> Tensor:
        """The input tokens ``X0 [B, T, D]``."""
        return self.encode(batch)[0]

    def encode(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """(``X0 [B, T, D]``, the sequence module's auxiliary loss or None)."""
        emb = self.embedding(batch)
        if self.sequence is None:
            return self.tokenizer(emb), None
        extra, aux = self.sequence(self.embedding, batch, emb.fields)
        return self.tokenizer(emb, extra), aux

    def linear_term(self, batch: Batch) -> Tensor | float:
        """The ``first_order`` term ``[B, 1]`` added to every logit (0.0 without it)."""
        return 0.0 if self.first_order is None else self.first_order(batch).fields.sum(dim=1)

    def forward(self, batch: Batch) -> ModelOutput:
        if self.aux_heads is not None:
            return self.forward_deep_supervision(batch)
        x0, seq_aux = self.encode(batch)
        linear = self.linear_term(batch)
        if self.exit_heads is None:
            x, aux, metrics = self.backbone(x0)
            return ModelOutput(logits=self.heads(x.mean(dim=1)) + linear, aux_loss=add_losses(aux, seq_aux),
                               metrics=metrics)
        exits: list[Tensor] = []
        heads = self.exit_heads

        def exit_head(i: int, h: Tensor) -> None:
            if i < len(heads):
                exits.append(heads[i](h.mean(dim=1)) + linear)

        x, aux, metrics = self.backbone(x0, after_block=exit_head)
        logits = self.heads(x.mean(dim=1)) + linear
        exits.append(logits)
        return ModelOutput(logits=logits, aux_loss=add_losses(aux, seq_aux), metrics=metrics, exit_logits=exits,
                           exit_loss_weights=self.cfg.early_exit.weights(len(exits)))

    def forward_deep_supervision(self, batch: Batch) -> ModelOutput:
        """The auxiliary heads' logits (shallowest first) then the final logits as
        ``exit_logits``, weighted ``aux_loss_weight`` each and 1 for the final head: the
        trainer's task loss is ``BCE(final) + w * sum_i BCE(aux_i)``."""
        assert self.aux_heads is not None
        heads, points = self.aux_heads, self.cfg.aux_points
        exits: list[Tensor] = []
        linear = self.linear_term(batch)

        def aux_head(i: int, h: Tensor) -> None:
            if i + 1 in points:
                exits.append(heads[points.index(i + 1)](h.mean(dim=1)) + linear)

        x0, seq_aux = self.encode(batch)
        x, aux, metrics = self.backbone(x0, after_block=aux_head)
        logits = self.heads(x.mean(dim=1)) + linear
        weights = [self.cfg.aux_loss_weight] * len(exits) + [1.0]
        return ModelOutput(logits=logits, aux_loss=add_losses(aux, seq_aux), metrics=metrics,
                           exit_logits=[*exits, logits],
                           exit_loss_weights=weights)

    def forward_early_exit(self, batch: Batch, thresholds: Sequence[float | None]) -> EarlyExitOutput:
        """Inference that stops early: one threshold per exit before the final head (``None``:
        never exit there); see :func:`~rankmixer.models.rankmixer.early_exit.forward_early_exit`."""
        return forward_early_exit(self, batch, thresholds)
