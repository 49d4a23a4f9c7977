"""The baseline models (lr, dlrm, deepfm, dcnv2, concat-mlp) beyond what every model does
(``test_conformance.py``): config validation, DCNv2's structures, DeepFM as the sum of its
parts, LR as a linear function, the all-concat MLP's sizes."""

from __future__ import annotations

import pytest
import torch
from tests.factories import make_feature_map, random_batch, small_model

from rankmixer.models import registry

pytestmark = pytest.mark.usefixtures("single_thread")

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
    model = small_model("dcnv2", tiny_feature_map, **params)
    batch = random_batch(tiny_feature_map, 16, generator)
    out = model(batch)
    assert out.logits.shape == (16, 2)
    out.logits.sum().backward()
    if params.get("low_rank"):
        assert all(layer.rank == params["low_rank"] for layer in model.cross.layers)


def test_deepfm_is_sum_of_its_parts(tiny_feature_map, generator):
    from rankmixer.nn.interaction import fm_second_order

    model = small_model("deepfm", tiny_feature_map).eval()
    batch = random_batch(tiny_feature_map, 8, generator)
    fields = model.embedding(batch).fields
    first = model.first_order(batch).fields.sum(1)
    ref = model.heads(model.dnn(fields.flatten(1))) + first + fm_second_order(fields)
    torch.testing.assert_close(model(batch).logits, ref)


def test_lr_is_linear(generator):
    fm = make_feature_map(num_tasks=1, bags=False, sequences=False)
    model = small_model("lr", fm)
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


def test_concat_mlp_sizes(generator):
    fm = make_feature_map()
    torch.manual_seed(0)
    model = registry.build_model("concat-mlp", fm, {"embedding_dim": 4, "dnn_hidden": [16, 8]})
    assert model(random_batch(fm, 8, generator)).logits.shape == (8, 2)
    n_in = len(model.embedding.field_names) * 4
    assert sum(p.numel() for p in model.dnn.parameters()) == n_in * 16 + 16 + 16 * 8 + 8
    cfg = registry.parse_config("concat-mlp-100m", {})
    dense = sum(a * b + b for a, b in zip([600] + cfg.dnn_hidden[:-1], cfg.dnn_hidden))
    assert 90e6 < dense < 130e6  # similar size to rankmixer-100m's backbone
