"""The baseline models (lr, dlrm, deepfm, dcnv2): shapes, gradients, configs, and that each can
fit a tiny planted problem."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tests.factories import (
    check_output_and_gradients,
    check_sparse_embedding_step,
    fit_auc,
    make_feature_map,
    planted_problem,
    random_batch,
)
from sklearn.metrics import roc_auc_score

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureInfo, FeatureMap
from rankmixer.models import registry
from rankmixer.models.base import ModelConfig, ModelOutput
from rankmixer.nn.embedding import FeatureEmbedding, set_sparse_gradients, split_parameters

MODELS = ["lr", "dlrm", "deepfm", "dcnv2"]

pytestmark = pytest.mark.usefixtures("single_thread")

# Small variants so the tests stay fast; the defaults are exercised in test_default_configs.
SMALL = {
    "lr": {},
    "dlrm": {"embedding_dim": 8, "bottom_mlp": [16], "top_mlp": [32, 16]},
    "deepfm": {"embedding_dim": 8, "dnn_hidden": [32, 16]},
    "dcnv2": {"embedding_dim": 8, "dnn_hidden": [32, 16], "num_cross_layers": 2},
}


def _build(name: str, fm: FeatureMap, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return registry.build_model(name, fm, {**SMALL[name], **overrides})


def test_registry_lists_models_with_summaries():
    models = registry.available()
    for name in MODELS:
        assert name in models
        entry = models[name]
        assert issubclass(entry.config_cls, ModelConfig)
        assert entry.summary and "(" in entry.summary  # one line, citing the paper


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("num_tasks", [1, 2])
def test_output_shape_and_gradients(name, num_tasks, generator):
    fm = make_feature_map(num_tasks=num_tasks)
    model = _build(name, fm, **({"head_hidden": [8]} if name != "lr" else {}))
    model.train()
    batch = random_batch(fm, 32, generator)
    check_output_and_gradients(name, model, batch, num_tasks)


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize(
    "kwargs",
    [dict(n_dense=0), dict(bags=False, sequences=False), dict(n_dense=0, bags=False, sequences=False), dict(n_sparse=0)],
    ids=["no_dense", "no_bags_no_sequences", "sparse_only", "no_sparse"],
)
def test_feature_maps_missing_kinds(name, kwargs, generator):
    fm = make_feature_map(num_tasks=2, **kwargs)
    model = _build(name, fm)
    batch = random_batch(fm, 8, generator)
    out = model(batch)
    assert out.logits.shape == (8, 2)
    out.logits.sum().backward()


@pytest.mark.parametrize("name", MODELS)
def test_default_configs(name, tiny_feature_map, generator):
    model = registry.build_model(name, tiny_feature_map)
    model.eval()
    with torch.no_grad():
        out = model(random_batch(tiny_feature_map, 4, generator))
    assert out.logits.shape == (4, 2)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", MODELS)
def test_config_typo_raises(name):
    with pytest.raises(ValueError, match="embeding_dim"):
        registry.parse_config(name, {"embeding_dim": 8})
    cfg = registry.parse_config(name, {"embedding_dim": 8})
    assert cfg.embedding_dim == 8


def test_config_values_are_validated():
    with pytest.raises(ValueError, match="structure"):
        registry.parse_config("dcnv2", {"structure": "stackd"})
    with pytest.raises(ValueError, match="dropout"):
        registry.parse_config("dlrm", {"dropout": 1.5})
    with pytest.raises(ValueError, match="low_rank"):
        registry.parse_config("dcnv2", {"low_rank": 0})


@pytest.mark.parametrize(
    "params",
    [
        {"structure": "stacked"},
        {"structure": "parallel", "low_rank": 4},
        {"structure": "stacked", "low_rank": 2, "batch_norm": True, "dropout": 0.1},
        {"num_cross_layers": 0},
    ],
)
def test_dcnv2_variants(params, tiny_feature_map, generator):
    model = _build("dcnv2", tiny_feature_map, **params)
    batch = random_batch(tiny_feature_map, 16, generator)
    out = model(batch)
    assert out.logits.shape == (16, 2)
    out.logits.sum().backward()
    if params.get("low_rank"):
        assert all(layer.rank == params["low_rank"] for layer in model.cross.layers)


def test_deepfm_is_sum_of_its_parts(tiny_feature_map, generator):
    from rankmixer.nn.interaction import fm_second_order

    model = _build("deepfm", tiny_feature_map).eval()
    batch = random_batch(tiny_feature_map, 8, generator)
    fields = model.embedding(batch).fields
    first = model.first_order(batch).fields.sum(1)
    ref = model.heads(model.dnn(fields.flatten(1))) + first + fm_second_order(fields)
    torch.testing.assert_close(model(batch).logits, ref)


def test_lr_is_linear(generator):
    fm = make_feature_map(num_tasks=1, bags=False, sequences=False)
    model = _build("lr", fm)
    with torch.no_grad():
        model.embedding.weight.normal_()
        model.embedding.weight[0] = 0
        model.bias.fill_(0.3)
    batch = random_batch(fm, 8, generator)
    emb = model.embedding
    ref = torch.full((8,), 0.3)
    for i, f in enumerate(fm.sparse):
        ref = ref + emb.table_weight(f.name)[batch.sparse[:, i], 0]
    ref = ref + batch.dense @ emb.numeric_weight()[:, 0]
    torch.testing.assert_close(model(batch).logits[:, 0], ref)


@pytest.mark.parametrize("name", MODELS)
def test_sparse_embedding_gradients_with_sparse_optimizer(name, tiny_feature_map, generator):
    check_sparse_embedding_step(_build(name, tiny_feature_map), tiny_feature_map, generator,
                                tables=2 if name == "deepfm" else 1)


# ---- overfitting a planted problem ------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_overfits_planted_problem(name):
    fm, batch = planted_problem(additive=(name == "lr"))
    auc = fit_auc(_build(name, fm), batch)
    assert auc > 0.9, f"{name}: train AUC {auc:.3f}"
