"""The paper's peer models (autoint, hiformer, dhen, wukong, moe, finalmlp): the same checks as
the baselines in test_models.py (shapes, gradients, configs, fitting a planted problem) plus
model-level equivalences. Layer equivalences against slow references are in test_peer_layers.py."""

from __future__ import annotations

import pytest
import torch
from tests.factories import make_feature_map, random_batch
from tests.factories import check_output_and_gradients, check_sparse_embedding_step, fit_auc, planted_problem

from rankmixer.models import registry
from rankmixer.models.base import ModelConfig
from rankmixer.nn.embedding import set_sparse_gradients, split_parameters

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {
    "autoint": {"embedding_dim": 8, "num_layers": 2, "attention_dim": 8},
    "autoint-plus": {"embedding_dim": 8, "num_layers": 2, "attention_dim": 8, "dnn_hidden": [32]},
    "hiformer": {"embedding_dim": 8, "num_layers": 2, "head_hidden": [16]},
    "dhen": {"embedding_dim": 8, "modules": ["dcn", "self_attention", "linear", "dot"], "dnn_hidden": [32]},
    "wukong": {"embedding_dim": 8, "num_fmb": 4, "num_lcb": 4, "fmb_hidden": [32], "dnn_hidden": [32]},
    "moe": {"embedding_dim": 8, "num_experts": 3, "expert_hidden": [32, 16]},
    "finalmlp": {"embedding_dim": 8, "mlp1_hidden": [32, 16], "mlp2_hidden": [16], "num_heads": 2},
}
MODELS = list(SMALL)

# Parameters whose gradient is zero at initialisation by design: FinalMLP's gates read a learned
# context vector that starts at zero, so their first layer's weight gets no gradient until that
# vector moves (FuxiCTR's FinalMLP does the same).
ZERO_GRAD_AT_INIT = {"finalmlp": ("gates.0.mlp.layers.0.weight", "gates.1.mlp.layers.0.weight")}


def _build(name, fm, **overrides):
    torch.manual_seed(0)
    return registry.build_model(name, fm, {**SMALL[name], **overrides})


def test_registered_with_paper_citations():
    models = registry.available()
    for name in MODELS:
        entry = models[name]
        assert issubclass(entry.config_cls, ModelConfig)
        assert entry.summary and " et al. 20" in entry.summary, name


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_tasks", [1, 3])
def test_output_shape_and_gradients(name, num_tasks, generator):
    fm = make_feature_map(num_tasks=num_tasks)
    model = _build(name, fm).train()
    batch = random_batch(fm, 32, generator)
    check_output_and_gradients(name, model, batch, num_tasks, ZERO_GRAD_AT_INIT.get(name, ()))


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    "kwargs",
    [dict(n_dense=0), dict(n_dense=0, bags=False, sequences=False), dict(n_sparse=0)],
    ids=["no_dense", "sparse_only", "no_sparse"],
)
def test_feature_maps_missing_kinds(name, kwargs, generator):
    fm = make_feature_map(num_tasks=2, **kwargs)
    model = _build(name, fm)
    out = model(random_batch(fm, 8, generator))
    assert out.logits.shape == (8, 2)
    out.logits.sum().backward()


@pytest.mark.parametrize("name", MODELS)
def test_default_configs(name, tiny_feature_map, generator):
    model = registry.build_model(name, tiny_feature_map).eval()
    with torch.no_grad():
        out = model(random_batch(tiny_feature_map, 4, generator))
    assert out.logits.shape == (4, 2) and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", MODELS)
def test_config_typo_raises(name):
    with pytest.raises(ValueError, match="embeding_dim"):
        registry.parse_config(name, {"embeding_dim": 8})


def test_config_values_are_validated(tiny_feature_map):
    with pytest.raises(ValueError, match="modules"):
        registry.parse_config("dhen", {"modules": ["dcn", "conv"]})
    with pytest.raises(ValueError, match="num_heads"):
        registry.parse_config("finalmlp", {"mlp1_hidden": [30], "num_heads": 4})
    with pytest.raises(ValueError, match="attention"):
        registry.parse_config("hiformer", {"attention": "vanilla"})
    with pytest.raises(ValueError, match="unknown fields"):
        registry.build_model("finalmlp", tiny_feature_map, {"fs1_context": ["nope"]})


@pytest.mark.parametrize("name", MODELS)
def test_sparse_embedding_gradients_with_sparse_optimizer(name, tiny_feature_map, generator):
    check_sparse_embedding_step(_build(name, tiny_feature_map), tiny_feature_map, generator, tables=1)


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
    model = _build(name, tiny_feature_map, **params).train()
    batch = random_batch(tiny_feature_map, 16, generator)
    out = model(batch)
    assert out.logits.shape == (16, 2) and torch.isfinite(out.logits).all()
    out.logits.sum().backward()


# ---- model-level equivalences ----------------------------------------------------------------


def test_autoint_plus_is_autoint_plus_a_dnn(tiny_feature_map, generator):
    model = _build("autoint-plus", tiny_feature_map).eval()
    batch = random_batch(tiny_feature_map, 8, generator)
    fields = model.embedding(batch).fields
    ref = model.heads(model.layers(fields).flatten(1)) + model.dnn_heads(model.dnn(fields.flatten(1)))
    torch.testing.assert_close(model(batch).logits, ref)


def test_hiformer_pruned_last_layer_equals_full_layer(tiny_feature_map, generator):
    """Pruning the last layer to the task tokens changes the compute, not the output: a model
    without pruning, given the pruned model's weights (its rows), gives the same logits."""
    pruned = _build("hiformer", tiny_feature_map, prune_last_layer=True).eval()
    full = _build("hiformer", tiny_feature_map, prune_last_layer=False).eval()
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
    model = _build("moe", tiny_feature_map, num_experts=1).eval()
    batch = random_batch(tiny_feature_map, 8, generator)
    h = model.experts.experts[0](model.embedding(batch).flat())
    ref = torch.cat([t(h) for t in model.towers], dim=1)
    torch.testing.assert_close(model(batch).logits, ref)


# ---- fitting a planted problem ---------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_overfits_planted_problem(name):
    """The label is a random table of two ids (an interaction): every model must fit it."""
    fm, batch = planted_problem(additive=False)
    auc = fit_auc(_build(name, fm), batch)
    assert auc > 0.9, f"{name}: train AUC {auc:.3f}"


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
