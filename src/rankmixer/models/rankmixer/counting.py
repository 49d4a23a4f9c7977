"""Analytic parameter and FLOP counts of a RankMixer, from its config alone.

FLOPs are matmul FLOPs (2 per multiply-add), forward, per sample: what
``torch.utils.flop_counter.FlopCounterMode`` counts (element-wise ops, LayerNorm, GELU, softmax,
embedding lookups excluded), so the tests check these formulas against the one measured counter,
``models/flops.py``. A training step costs about 3x the forward. The backbone's leading terms are
the paper's: params ~ 2kLTD^2, FLOPs ~ 4kLTD^2 per sample (reported as ``paper_estimate``).

Why analytic: the big variants (billions of parameters for rankmixer-1b-moe) are counted
without allocating them; :func:`describe` checks the count against a module built on the meta
device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models import registry
from rankmixer.models.rankmixer.model import RankMixerBackbone, RankMixerConfig
from rankmixer.nn.embedding import FeatureEmbedding
from rankmixer.nn.norm import norm_params
from rankmixer.nn.tokenizer import attention_unit_flops, attention_unit_params, sequence_targets, token_input_widths


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


def _ffns_per_block(cfg: RankMixerConfig) -> int:
    """FFN sublayers per block: two in TokenMixer-Large's block (mixed and reverted layout)."""
    return 2 if cfg.block == "mix_revert" else 1


def _moe_parts(cfg: RankMixerConfig) -> tuple[int, int, int]:
    """(experts E, expert hidden H, routers per token) of the MoE FFN."""
    m = cfg.moe
    H = max(1, round(cfg.expansion * cfg.hidden_dim * m.expert_hidden_mult))
    return m.num_experts, H, 2 if m.routing == "relu_dtsi" else 1


def _inputs(cfg: RankMixerConfig, inputs: FeatureMap | Sequence[int] | None, num_tasks: int | None):
    """(token input widths, embedding params, attention units [(params, flops)], tasks). The
    embedding params include the ``first_order`` term's 1-dim tables (one weight per row)."""
    if inputs is None:
        return [], 0, [], num_tasks or 1
    if isinstance(inputs, FeatureMap):
        if inputs.behaviours:
            raise ValueError(
                "the closed-form count does not cover sequence modules (the data has behaviours "
                f"{[f.name for f in inputs.behaviours]}); count with rankmixer.models.flops.count_flops"
            )
        names, rows = _field_names(inputs, cfg.embedding_dim)
        widths = token_input_widths(cfg.tokenizer, names, inputs.feature_groups, cfg.embedding_dim, cfg.num_tokens)
        units = []
        if cfg.sequence_pooling == "target_attention":
            for s in sequence_targets(inputs, names, cfg.sequence_targets):
                L = inputs.feature(s).max_len
                units.append((attention_unit_params(cfg.embedding_dim, cfg.attention_hidden),
                              attention_unit_flops(cfg.embedding_dim, cfg.attention_hidden, L)))
        emb = rows * (cfg.embedding_dim + (1 if cfg.first_order else 0))
        return widths, emb, units, num_tasks or inputs.num_tasks
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
    exit also ``exit_heads`` (the L-1 intermediate exits; in ``dense``), with deep supervision
    ``aux_heads`` (in ``dense``). TokenMixer-Large's block has two FFN sublayers (``2x``).
    """
    cfg = _as_config(cfg)
    widths, emb, units, tasks = _inputs(cfg, inputs, num_tasks)
    T, D, L, H = cfg.num_tokens, cfg.hidden_dim, cfg.num_layers, cfg.ffn_hidden
    norm = norm_params(cfg.norm, D)
    per_block = 0 if cfg.norm_placement == "none" else 2 * norm
    if cfg.token_mixing == "self_attention":
        per_block += 4 * D * D + 4 * D
    if cfg.moe is not None:
        E, He, R = _moe_parts(cfg)
        ffn = T * E * (2 * D * He + He + D) + R * T * (D * E + E)
        ffn += T * (2 * D * He + He + D) if cfg.moe.shared_expert else 0
    elif cfg.ffn == "per_token":
        ffn = T * (2 * D * H + H + D)
    else:
        ffn = 2 * D * H + H + D
    per_block += _ffns_per_block(cfg) * ffn
    heads, _ = _towers(D, cfg.head_hidden, tasks)
    out = {
        "embedding": emb,
        "sequence_pooling": sum(p for p, _ in units),
        "tokenizer": sum(w * D + D for w in widths),
        "blocks": L * per_block + (norm if cfg.norm_placement == "pre" else 0),  # + the final norm
        "heads": heads,
    }
    out["dense"] = out["sequence_pooling"] + out["tokenizer"] + out["blocks"] + out["heads"]
    if cfg.aux_loss_weight > 0:
        out["aux_heads"] = len(cfg.aux_points) * heads
        out["dense"] += out["aux_heads"]
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

    Sparse-Pertoken MoE (``sparse_training``): ``blocks`` = ``blocks_active`` (k of E experts,
    the shared expert, the router). Deep supervision: ``aux_heads`` is in ``forward``.

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
    n = _ffns_per_block(cfg)
    if cfg.moe is not None:
        m = cfg.moe
        E, He, R = _moe_parts(cfg)
        ratio = (m.k / E if m.routing == "topk" else m.target_active_ratio) if active_ratio is None else active_ratio
        shared = 4 * T * D * He if m.shared_expert else 0
        active = round(4 * T * E * D * He * ratio) + 2 * T * D * E + shared
        out["blocks_active"] = L * (mix + n * active)
        if m.sparse_training:  # training runs the routed experts only (padding rows not counted)
            out["blocks"] = out["blocks_active"]
        else:  # dense path: all experts, the routers, and the gate-weighted bias sum_j G_j b2_j (a bmm)
            out["blocks"] = L * (mix + n * (4 * T * E * D * He + R * 2 * T * D * E + 2 * T * E * D + shared))
    else:
        out["blocks"] = L * (mix + n * 4 * T * D * H)
    rest = out["sequence_pooling"] + out["tokenizer"] + out["heads"]
    if cfg.aux_loss_weight > 0:
        out["aux_heads"] = len(cfg.aux_points) * head_flops
        rest += out["aux_heads"]
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
    parameter count checked against a module built on the meta device (never in memory).

    Returns ``{"name", "config", "params", "flops", "meta_module_params"}``: ``params`` and
    ``flops`` are :func:`rankmixer_param_count` and :func:`rankmixer_flops_per_sample` on the
    feature map (or on none: the backbone and heads only), ``meta_module_params`` the parameters
    of the built module (the whole model with a feature map, else the backbone)."""
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
