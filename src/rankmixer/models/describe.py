"""What ``rankmixer models --describe NAME`` prints, as plain data, for any registered model.

Nothing is allocated: parameters are counted on a module built on the meta device, so even the
billion-parameter variants describe in a moment. A model with an analytic count (RankMixer
today, ``models/rankmixer/counting.py``) also reports its parts and FLOPs per sample; any other
model reports its parameters (which depend on the features, hence the feature map).
"""

from __future__ import annotations

from typing import Any

import torch

from rankmixer.data.feature_map import FeatureMap
from rankmixer.models import registry
from rankmixer.models.rankmixer import RankMixerConfig, describe
from rankmixer.nn.embedding import split_parameters

# Display order of RankMixer's analytic parts (keys absent for a config are left out).
_PARAM_PARTS = ["embedding", "sequence_pooling", "tokenizer", "blocks", "heads", "exit_heads", "dense", "total",
                "paper_estimate", "meta_module_params"]
_FLOP_PARTS = ["sequence_pooling", "tokenizer", "blocks", "heads", "exit_heads", "forward", "blocks_active",
               "forward_active", "train", "paper_estimate"]


def describe_model(name: str, overrides: dict | None = None, feature_map: FeatureMap | None = None) -> dict[str, Any]:
    """Describe the registered model (or variant) ``name`` with config ``overrides``.

    Returns ``{"name": str, "summary": str, "config": dict, "params": {part: int} | None,
    "flops": {part: int} | None, "notes": [str]}``:

    * ``config``: the validated config (variant presets and overrides merged), JSON-ready.
    * ``params``: parameter counts by part, in display order. RankMixer: its analytic parts
      (``embedding``, ``sequence_pooling``, ``tokenizer``, ``blocks``, ``heads``, ``exit_heads``
      with early exit, ``dense``, ``total``; without a feature map only ``blocks``), then
      ``paper_estimate`` (2kLTD^2) and ``meta_module_params`` (the module built on the meta
      device, equal to the analytic ``total``, or ``blocks`` without a feature map). Any other
      model: ``embedding``, ``dense`` and ``total`` of the module built on the meta device from
      ``feature_map``; None without one.
    * ``flops``: forward matmul FLOPs per sample by part (RankMixer only, else None):
      ``sequence_pooling``, ``tokenizer``, ``blocks``, ``heads``, ``exit_heads``, ``forward``,
      ``blocks_active`` / ``forward_active`` (sparse MoE inference), ``train`` (a training step,
      ~3x forward), ``paper_estimate`` (4kLTD^2); without a feature map only the blocks.
    * ``notes``: one sentence each, for a reader of the tables (what is counted, what to pass).

    Raises KeyError for an unknown name, ValueError for a bad override.
    """
    entry = registry.get(name)
    cfg = registry.parse_config(name, overrides or {})
    out: dict[str, Any] = {"name": name, "summary": entry.summary, "config": cfg.model_dump(mode="json"),
                           "params": None, "flops": None, "notes": []}
    if isinstance(cfg, RankMixerConfig):
        out["params"], out["flops"], out["notes"] = _rankmixer_parts(name, overrides or {}, feature_map)
    elif feature_map is not None:
        with torch.device("meta"):
            model = registry.build_model(name, feature_map, cfg)
        emb, rest = split_parameters(model)
        n_emb, n_rest = sum(p.numel() for p in emb), sum(p.numel() for p in rest)
        out["params"] = {"embedding": n_emb, "dense": n_rest, "total": n_emb + n_rest}
        out["notes"] = ["parameters: counted on the module built on the meta device (embedding = its tables)",
                        "FLOPs: no analytic count for this model; `rankmixer bench accuracy` measures them"]
    else:
        out["notes"] = ["parameters: pass --feature-map (a prepared feature map): this model's size depends on "
                        "the features",
                        "FLOPs: no analytic count for this model; `rankmixer bench accuracy` measures them"]
    return out


def _rankmixer_parts(name: str, overrides: dict, feature_map: FeatureMap | None):
    """(params, flops, notes) of a RankMixer from its analytic count, checked on the meta device."""
    info = describe(name, overrides, feature_map)
    params = {**info["params"], "meta_module_params": info["meta_module_params"]}
    flops = dict(info["flops"])
    notes = ["FLOPs: forward matmul FLOPs per sample (2 per multiply-add); train: a training step, ~3x forward",
             "paper_estimate: the paper's leading terms, 2kLTD^2 parameters and 4kLTD^2 FLOPs"]
    if feature_map is None:
        keep = {"blocks", "blocks_active", "paper_estimate", "meta_module_params"}
        params = {k: v for k, v in params.items() if k in keep}
        flops = {k: v for k, v in flops.items() if k in keep}
        flops["train"] = 3 * flops["blocks"]
        notes.append("backbone only (blocks): pass --feature-map to count the embedding, tokenizer and heads too")
    built = "model" if feature_map is not None else "backbone"
    notes.append(f"meta_module_params: the {built} built on the meta device, equal to the analytic count")
    if "blocks_active" in flops:
        notes.append("MoE: blocks counts the training forward (every expert); *_active count sparse inference "
                     "at the target active ratio")
    params = {k: params[k] for k in _PARAM_PARTS if k in params}
    flops = {k: flops[k] for k in _FLOP_PARTS if k in flops}
    return params, flops, notes
