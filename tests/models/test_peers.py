"""The paper's peer models (autoint, hiformer, dhen, wukong, moe, finalmlp) beyond what every
model does (``test_conformance.py``): config validation, each model's switches, and model-level
equivalences. Layer equivalences against slow references are in ``tests/nn/test_peer_layers.py``."""

from __future__ import annotations

import pytest
import torch
from tests.factories import random_batch, small_model

from rankmixer.models import registry
from rankmixer.nn.embedding import set_sparse_gradients, split_parameters

pytestmark = pytest.mark.usefixtures("single_thread")


def test_config_values_are_validated(tiny_feature_map):
    with pytest.raises(ValueError, match="modules"):
        registry.parse_config("dhen", {"modules": ["dcn", "conv"]})
    with pytest.raises(ValueError, match="num_heads"):
        registry.parse_config("finalmlp", {"mlp1_hidden": [30], "num_heads": 4})
    with pytest.raises(ValueError, match="attention"):
        registry.parse_config("hiformer", {"attention": "vanilla"})
    with pytest.raises(ValueError, match="unknown fields"):
        registry.build_model("finalmlp", tiny_feature_map, {"fs1_context": ["nope"]})


@pytest.mark.parametrize("name,params", [
    ("autoint", {"use_scale": True, "layer_norm": True, "use_residual": False, "attention_dropout": 0.1}),
    ("hiformer", {"attention": "heterogeneous"}),
    ("hiformer", {"low_rank": 4, "ffn": "shared", "prune_last_layer": False}),
    ("dhen", {"ensemble": "sum", "modules": ["dot", "linear"], "dcn_low_rank": 2}),
    ("dhen", {"modules": ["dcn"], "dcn_low_rank": 2, "num_layers": 3}),
    ("wukong", {"rank": None, "num_layers": 3}),
    ("wukong", {"num_fmb": None, "num_lcb": None}),
    ("finalmlp", {"fs1_context": ["s0"], "fs2_context": ["s1", "hist"]}),
    ("finalmlp", {"use_feature_selection": False, "num_heads": 1}),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={v}" for k, v in v.items()))
def test_config_variants(name, params, tiny_feature_map, generator):
    model = small_model(name, tiny_feature_map, **params).train()
    batch = random_batch(tiny_feature_map, 16, generator)
    out = model(batch)
    assert out.logits.shape == (16, 2) and torch.isfinite(out.logits).all()
    out.logits.sum().backward()


# ---- model-level equivalences ----------------------------------------------------------------


def test_autoint_plus_is_autoint_plus_a_dnn(tiny_feature_map, generator):
    model = small_model("autoint-plus", tiny_feature_map).eval()
    batch = random_batch(tiny_feature_map, 8, generator)
    fields = model.embedding(batch).fields
    ref = model.heads(model.layers(fields).flatten(1)) + model.dnn_heads(model.dnn(fields.flatten(1)))
    torch.testing.assert_close(model(batch).logits, ref)


def test_hiformer_pruned_last_layer_equals_full_layer(tiny_feature_map, generator):
    """Pruning the last layer to the task tokens changes the compute, not the output: a model
    without pruning, given the pruned model's weights (its rows), gives the same logits."""
    pruned = small_model("hiformer", tiny_feature_map, prune_last_layer=True).eval()
    full = small_model("hiformer", tiny_feature_map, prune_last_layer=False).eval()
    full_sd = full.state_dict()
    for k, v in pruned.state_dict().items():
        if full_sd[k].shape == v.shape:
            full_sd[k] = v.clone()
        else:  # last layer: the pruned projections are the first rows of the full ones
            full_sd[k][: v.shape[0]] = v
    full.load_state_dict(full_sd)
    batch = random_batch(tiny_feature_map, 8, generator)
    assert pruned.layers[-1].attn.w_o.shape[0] == 2 and full.layers[-1].attn.w_o.shape[0] > 2
    torch.testing.assert_close(pruned(batch).logits, full(batch).logits)


def test_moe_with_one_expert_is_an_mlp(tiny_feature_map, generator):
    model = small_model("moe", tiny_feature_map, num_experts=1).eval()
    batch = random_batch(tiny_feature_map, 8, generator)
    h = model.experts.experts[0](model.embedding(batch).flat())
    ref = torch.cat([t(h) for t in model.towers], dim=1)
    torch.testing.assert_close(model(batch).logits, ref)


def test_plain_nn_embedding_tables_join_the_embedding_group():
    """A peer library's own tables (plain nn.Embedding, e.g. FuxiCTR's) get the embedding
    optimizer and sparse gradients like our FeatureEmbedding; a shared table appears once."""
    from torch import nn

    shared = nn.Embedding(10, 4, padding_idx=0)
    model = nn.ModuleDict({"a": shared, "b": shared, "c": nn.Embedding(5, 4), "fc": nn.Linear(4, 1)})
    emb, rest = split_parameters(model)
    assert [id(p) for p in emb] == [id(shared.weight), id(model["c"].weight)]
    assert {id(p) for p in rest} == {id(model["fc"].weight), id(model["fc"].bias)}
    assert set_sparse_gradients(model) == 2 and shared.sparse and model["c"].sparse
