"""DIN: the activation unit against FuxiCTR's ``DIN_Attention`` on the same weights, and the
pooling of multi-field behaviours against a float64 loop over rows and positions."""

from __future__ import annotations


import pytest
import torch
from tests.factories import NEEDS_FUXICTR

from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.models import registry
from rankmixer.nn.mlp import MLP
from rankmixer.nn.tokenizer import activation_weights

pytestmark = pytest.mark.usefixtures("single_thread")


@NEEDS_FUXICTR
@pytest.mark.parametrize("softmax", [False, True])
def test_activation_unit_matches_fuxictr(softmax):
    from fuxictr.pytorch.layers import DIN_Attention

    torch.manual_seed(0)
    B, L, d = 5, 7, 6
    theirs = DIN_Attention(embedding_dim=d, attention_units=[16, 8], hidden_activations="ReLU", use_softmax=softmax)
    ours = MLP(4 * d, [16, 8], 1, activation="relu")
    mine = [m for m in ours.modules() if isinstance(m, torch.nn.Linear)]
    their = [m for m in theirs.modules() if isinstance(m, torch.nn.Linear)]
    for a, b in zip(mine, their, strict=True):
        a.load_state_dict(b.state_dict())
    # FuxiCTR's unit reads [q, h, q - h, q * h], ours [h, q, h - q, h * q]: the same first layer
    # with its input blocks reordered and the difference block negated.
    t_w, h_w, diff_w, prod_w = their[0].weight.detach().split(d, dim=1)
    with torch.no_grad():
        mine[0].weight.copy_(torch.cat([h_w, t_w, -diff_w, prod_w], dim=1))
    hist, q = torch.randn(B, L, d), torch.randn(B, d)
    mask = torch.arange(L)[None, :] < torch.tensor([7, 3, 1, 5, 2])[:, None]  # every row has a behaviour
    hist = hist * mask.unsqueeze(-1)
    expected = theirs(q, hist, mask)
    w = activation_weights(ours, hist, mask, q, softmax)
    torch.testing.assert_close((w.unsqueeze(-1) * hist).sum(dim=1), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("softmax", [False, True])
def test_behaviour_pooling_matches_a_float64_loop(behaviour_data, softmax):
    fm = behaviour_data
    torch.manual_seed(1)
    model = registry.build_model("din", fm, {"embedding_dim": 4, "attention_hidden": [8], "softmax": softmax,
                                             "attention_activation": "relu"}).double().eval()
    with torch.no_grad():  # embeddings large enough that the scores differ between positions
        model.embedding.weight.normal_(0.0, 0.5)
        model.embedding.weight[0].zero_()
    batch = next(iter(make_loader(ParquetBatches(fm, "train", 64, shuffle=False))))
    ids = batch.behaviours["hist"]  # [B, L, 4]: item, cat, type, dt
    assert model.encoders.specs[0].keys == (0, 1)  # item and cat share the candidate's tables
    emb = model.embedding
    names = emb.field_names
    with torch.no_grad():
        got = model.encode_behaviours(batch, emb(batch).fields)[0].tokens.flatten(1)
        unit = model.encoders["hist"].unit
        fields_meta = emb.behaviour_fields["hist"]
        for r in range(ids.shape[0]):
            q = torch.cat([emb.weight[emb.global_ids(n, batch.sparse[r, names.index(n)])] for n in ("item", "cat")])
            positions = [pos for pos in range(ids.shape[1]) if (ids[r, pos] != 0).any()]
            vecs, scores = [], []
            for pos in positions:
                v = [emb.weight[ids[r, pos, k] + emb.table_offsets[b.table] if ids[r, pos, k] else 0]
                     for k, b in enumerate(fields_meta)]
                key = torch.cat(v[:2])
                scores.append(unit(torch.cat([key, q, key - q, key * q]))[0])
                vecs.append(torch.cat(v))
            expected = torch.zeros(got.shape[1], dtype=torch.float64)
            if positions:
                w = torch.stack(scores)
                w = w.softmax(0) if softmax else w
                expected = sum(wi * v for wi, v in zip(w, vecs))
            torch.testing.assert_close(got[r], expected, rtol=1e-10, atol=1e-12)
    out = model(batch).logits
    assert out.shape == (ids.shape[0], 1) and torch.isfinite(out).all()
