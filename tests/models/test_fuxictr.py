"""The fuxictr-* models: FuxiCTR's own layers on our batches. Where FuxiCTR's layer and ours
compute the same function, outputs must match with copied weights (FuxiCTR's code is the
reference for ours, and ours for the adapter's plumbing). What every model does is in
``test_conformance.py``."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from tests.factories import hide_fuxictr, make_feature_map, random_batch, small_model

from rankmixer.models import registry
from rankmixer.models.fuxictr import FuxiMultiHeadSelfAttention, batch_to_inputs, require_fuxictr
from rankmixer.nn.cross import CrossNetV2
from rankmixer.nn.embedding import FeatureEmbedding, split_parameters
from rankmixer.nn.interaction import dot_interaction, fm_second_order

pytestmark = pytest.mark.usefixtures("single_thread")


def test_missing_fuxictr_gives_install_hint(monkeypatch, tiny_feature_map):
    """Without the extra, the names are still registered and building one says what to install."""
    hide_fuxictr(monkeypatch)
    assert "fuxictr-dcnv2" in registry.available()
    with pytest.raises(ImportError, match=r"pip install .*\.\[fuxictr\]"):
        registry.build_model("fuxictr-dcnv2", tiny_feature_map)


@pytest.fixture
def fx():
    """FuxiCTR's layers; every test below is skipped without the extra (the one above is not)."""
    pytest.importorskip("fuxictr", reason="FuxiCTR peers need the optional extra: pip install -e '.[fuxictr]'")
    from fuxictr.pytorch import layers

    return layers


@pytest.mark.parametrize("name", [n for n in registry.available() if n.startswith("fuxictr-")])
def test_fuxictr_tables_are_exactly_the_embedding_group(fx, name, tiny_feature_map):
    """FuxiCTR's tables are nn.Embedding modules (no FeatureEmbedding): the trainer must give
    exactly them the embedding optimizer, as it does our FeatureEmbedding."""
    model = small_model(name, tiny_feature_map)
    emb, _ = split_parameters(model)
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    assert emb and {id(p) for p in emb} == tables
    assert not any(isinstance(m, FeatureEmbedding) for m in model.modules())


@pytest.mark.parametrize("name,params", [
    ("fuxictr-dcnv2", {"structure": "stacked_parallel", "low_rank_mixture": True, "low_rank": 4}),
    ("fuxictr-dcnv2", {"structure": "crossnet_only"}),
    ("fuxictr-dlrm", {"interaction": "cat"}),
    ("fuxictr-autoint", {"use_wide": False, "dnn_hidden": [], "use_scale": True, "layer_norm": True}),
    ("fuxictr-finalmlp", {"fs1_context": ["clicks"], "fs2_context": ["s0", "hist"], "num_heads": 2}),
    ("fuxictr-finalmlp", {"use_feature_selection": False}),
], ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={v}" for k, v in v.items()))
def test_config_variants(fx, name, params, tiny_feature_map, generator):
    model = small_model(name, tiny_feature_map, **params).train()
    out = model(random_batch(tiny_feature_map, 16, generator))
    assert out.logits.shape == (16, 2) and torch.isfinite(out.logits).all()
    out.logits.sum().backward()


def test_fuxictr_embedding_on_our_ids_equals_our_embedding(fx, generator):
    """Their embedding layer on our Batch, with our tables copied in, gives our fields: same
    ids, same pad handling, same masked means for bags and sequences, same shared tables."""
    fm = make_feature_map(num_tasks=1)
    model = small_model("fuxictr-deepfm", fm)
    ours = FeatureEmbedding(fm, 8, numeric_as_field=True)
    layers = model.embedding_layer.embedding_layer.embedding_layers
    with torch.no_grad():
        for f in fm.sparse + fm.bags + fm.sequences:
            if f.share_with is None:
                layers[f.name].weight.copy_(ours.table_weight(f.name))
        for j, f in enumerate(fm.dense):
            layers[f.name].weight.copy_(ours.numeric_weight()[j].view(-1, 1))
    batch = random_batch(fm, 32, generator)
    theirs = model.embedding_layer(batch_to_inputs(fm, batch))
    torch.testing.assert_close(theirs, ours(batch).fields)
    assert list(model.fx_map.features) == ours.field_names


def test_crossnetv2_matches_ours_with_copied_weights(fx):
    torch.manual_seed(0)
    theirs = fx.CrossNetV2(12, 3)
    ours = CrossNetV2(12, 3)
    with torch.no_grad():
        for t, o in zip(theirs.cross_layers, ours.layers):
            o.w.weight.copy_(t.weight)
            o.w.bias.copy_(t.bias)
    x = torch.randn(5, 12)
    torch.testing.assert_close(theirs(x), ours(x))


def test_inner_product_interaction_matches_our_fm_and_dot(fx):
    x = torch.randn(4, 6, 5, dtype=torch.float64)
    torch.testing.assert_close(fx.InnerProductInteraction(6, "product_sum")(x), fm_second_order(x))
    torch.testing.assert_close(fx.InnerProductInteraction(6, "bi_interaction")(x), fm_second_order(x, reduce=False))
    torch.testing.assert_close(fx.InnerProductInteraction(6, "inner_product").double()(x), dot_interaction(x))


def test_fuxictr_self_attention_matches_our_interacting_layer(fx):
    """The zoo's AutoInt attention (around the wheel's ScaledDotProductAttention) and our
    InteractingLayer are the same function given the same weights."""
    from rankmixer.nn.attention import InteractingLayer

    torch.manual_seed(0)
    for in_dim, att, heads, scale in ((6, 8, 2, False), (8, 8, 4, True)):
        theirs = FuxiMultiHeadSelfAttention(require_fuxictr(), in_dim, att, heads, 0.0, True, scale, False).double()
        ours = InteractingLayer(in_dim, att, heads, use_residual=True, use_scale=scale).double()
        with torch.no_grad():
            ours.w_q.weight.copy_(theirs.W_q.weight)
            ours.w_k.weight.copy_(theirs.W_k.weight)
            ours.w_v.weight.copy_(theirs.W_v.weight)
            if theirs.W_res is not None:
                ours.w_res.weight.copy_(theirs.W_res.weight)
        x = torch.randn(3, 5, in_dim, dtype=torch.float64)
        torch.testing.assert_close(theirs(x), ours(x))


def test_fuxictr_deepfm_is_lr_plus_fm_plus_mlp(fx, generator):
    fm = make_feature_map(num_tasks=1, n_dense=0, bags=False, sequences=False)
    model = small_model("fuxictr-deepfm", fm).eval()
    with torch.no_grad():  # non-trivial first-order weights (they start at ~1e-4)
        for m in model.fm.lr_layer.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight.normal_()
        model.fm.lr_layer.bias.fill_(0.3)
    batch = random_batch(fm, 8, generator)
    X = batch_to_inputs(fm, batch)
    emb = model.embedding_layer(X)
    lr_tables = model.fm.lr_layer.embedding_layer.embedding_layer.embedding_layers
    lr = 0.3 + sum(lr_tables[f.name].weight[batch.sparse[:, i], 0] for i, f in enumerate(fm.sparse))
    ref = lr.unsqueeze(1) + fm_second_order(emb) + model.mlp(emb.flatten(1))
    torch.testing.assert_close(model(batch).logits, ref)


def test_fuxictr_init_follows_its_base_model(fx, tiny_feature_map):
    """FuxiCTR's BaseModel.reset_parameters: zero linear biases, embeddings ~ N(0, 1e-4)."""
    model = small_model("fuxictr-dcnv2", tiny_feature_map)
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.bias is not None:
            assert torch.all(m.bias == 0)
    w = model.embedding_layer.embedding_layer.embedding_layers["s0"].weight
    assert torch.all(w[0] == 0) and 0 < w[1:].std() < 1e-3
    # numeric features: nn.Linear(1, d) under xavier-normal, std sqrt(2 / (1 + d)) ...
    num = model.embedding_layer.embedding_layer.embedding_layers["d0"]
    assert isinstance(num, torch.nn.Linear) and num.bias is None
    d = num.weight.shape[0]
    assert 0.3 * (2 / (1 + d)) ** 0.5 < num.weight.std() < 3 * (2 / (1 + d)) ** 0.5
    # ... unless the numeric_init_std diagnostic re-initialises them like our table rows
    small = small_model("fuxictr-dcnv2", tiny_feature_map, numeric_init_std=1e-3)
    assert small.embedding_layer.embedding_layer.embedding_layers["d0"].weight.abs().max() < 1e-2


def test_first_order_pooling_sum_is_fuxictrs_and_mean_is_ours(fx, generator):
    """FuxiCTR's LR sum-pools bags/sequences; the ``mean`` diagnostic divides by the real ids."""
    fm = make_feature_map(num_tasks=1, n_sparse=0, n_dense=0, bags=True, sequences=False)  # one bag, "tags"
    batch = random_batch(fm, 16, generator)
    ids = batch.bags["tags"]
    count = (ids != 0).sum(1).clamp_min(1).to(torch.float32)
    for pooling in ("sum", "mean"):
        model = small_model("fuxictr-deepfm", fm, first_order_pooling=pooling)
        lr = model.fm.lr_layer
        w = lr.embedding_layer.embedding_layer.embedding_layers["tags"].weight[:, 0]
        ref = w[ids].sum(1) / (count if pooling == "mean" else 1) + lr.bias
        torch.testing.assert_close(lr(batch_to_inputs(fm, batch))[:, 0], ref, rtol=1e-5, atol=1e-7)


def test_fuxictr_bilinear_aggregation_matches_our_bilinear_fusion(fx):
    """The zoo's InteractionAggregation (its weight layout) and our BilinearFusion are the same
    function: copy its weights into ours, viewed as [heads, x, out, y] -> [heads, x, y, out]."""
    from rankmixer.nn.fusion import BilinearFusion
    from rankmixer.models.fuxictr import FuxiInteractionAggregation

    torch.manual_seed(0)
    theirs = FuxiInteractionAggregation(8, 12, output_dim=3, num_heads=4).double()
    ours = BilinearFusion(8, 12, num_heads=4, out_dim=3).double()
    with torch.no_grad():
        ours.w_x.load_state_dict(theirs.w_x.state_dict())
        ours.w_y.weight.copy_(theirs.w_y.weight)
        ours.w_x.bias.add_(theirs.w_y.bias)  # ours has one bias
        ours.w_xy.copy_(theirs.w_xy.view(4, 2, 3, 3).permute(0, 1, 3, 2))
    x, y = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 12, dtype=torch.float64)
    torch.testing.assert_close(theirs(x, y), ours(x, y))


def test_fuxictr_wukong_fm_is_our_optimized_fm(fx):
    from rankmixer.nn.fm_block import fm_matrix
    from rankmixer.models.fuxictr import FuxiWuKongLayer

    torch.manual_seed(0)
    layer = FuxiWuKongLayer(5, 4, project_dim=3, fmb_units=[8], fmb_dim=6, compression_dim=7, dropout=0.0).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    fm = fm_matrix(x, layer.projection_matrix).flatten(1)
    fmb = torch.relu(layer.fmb_mlp(layer.fmb_norm(fm)))
    ref = layer.layer_norm(layer.transform(torch.cat([fmb, layer.lcb(x.flatten(1))], 1)) + x.flatten(1))
    torch.testing.assert_close(layer(x), ref)


def test_fuxictr_finalmlp_gate_without_context_has_a_dead_hidden_layer(fx, generator):
    """A property of FuxiCTR's FinalMLP that docs/peers.md reports: with no context fields, the
    gate's input is a zero vector and, after FuxiCTR's init, its hidden biases are zero, so the
    hidden ReLU sits at 0 and its layer (and the context vector) never get a gradient; the gate
    is only ever 2 sigmoid(output bias). Ours starts with non-zero biases and trains the layer."""
    fm = make_feature_map(num_tasks=1)
    batch = random_batch(fm, 32, generator)
    theirs = small_model("fuxictr-finalmlp", fm, fs1_context=[])
    F.binary_cross_entropy_with_logits(theirs(batch).logits, batch.labels).backward()
    gate = theirs.fs_module.gates[0].mlp
    assert torch.all(gate[0].weight.grad == 0) and torch.all(theirs.fs_module.ctx_bias["0"].grad == 0)
    assert gate[2].bias.grad.abs().sum() > 0  # the output layer's bias does learn
    ours = registry.build_model("finalmlp", fm, {"embedding_dim": 8, "mlp1_hidden": [16], "mlp2_hidden": [8]})
    F.binary_cross_entropy_with_logits(ours(batch).logits, batch.labels).backward()
    assert ours.gates[0].bias.grad.abs().sum() > 0
