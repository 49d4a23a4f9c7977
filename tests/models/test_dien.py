"""DIEN on the behaviour data: trains with a finite auxiliary loss whose gradient reaches the
interest extractor, has no auxiliary loss at inference, and its behaviour input is the
encoder's on the embedded history (the encoder itself is checked against loops in
tests/nn/test_sequence_dien.py)."""

from __future__ import annotations


import pytest
import torch

from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.models import registry

pytestmark = pytest.mark.usefixtures("single_thread")


def batches(fm, n):
    it = iter(make_loader(ParquetBatches(fm, "train", 64, shuffle=False)))
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize("activation", ["prelu", "dice"])
def test_trains_with_the_aux_loss_reaching_the_extractor(behaviour_data, activation):
    fm = behaviour_data
    torch.manual_seed(0)
    model = registry.build_model("dien", fm, {"embedding_dim": 4, "attention_hidden": [8], "dnn_hidden": [16],
                                              "dnn_activation": activation})
    enc = model.encoders["hist"]
    assert enc.out_dim == 4 * 4  # item, cat, type, dt: F * d, as the paper
    assert model.encoders.specs[0].keys == (0, 1)  # attention against the candidate's item and cat
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for batch in batches(fm, 4):
        out = model(batch)
        assert out.aux_loss is not None and torch.isfinite(out.aux_loss) and out.aux_loss.item() > 0
        task = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch.labels)
        opt.zero_grad()
        (task + out.aux_loss).backward()
        for p in (enc.extractor.weight_ih_l0, enc.extractor.weight_hh_l0, enc.attention.weight,
                  enc.evolution.hidden.weight):
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
        opt.step()
    # the aux loss alone sends gradient into the extractor (it is its whole point)
    opt.zero_grad()
    model(batch).aux_loss.backward()
    assert enc.extractor.weight_ih_l0.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert out.aux_loss is None and torch.isfinite(out.logits).all()


def test_behaviour_vectors_reach_the_encoder_and_weight_zero_disables_aux(behaviour_data):
    fm = behaviour_data
    torch.manual_seed(0)
    model = registry.build_model("dien", fm, {"embedding_dim": 4, "attention_hidden": [8], "dnn_hidden": [16],
                                              "aux_loss_weight": 0.0, "gru_hidden": 6}).double().train()
    batch = batches(fm, 1)[0]
    assert model(batch).aux_loss is None
    assert model.encoders["hist"].out_dim == 6 and model.mlp.in_features == 3 * 4 + 6
    # Changing one row's history changes only that row's evolved interest.
    emb = model.embedding
    with torch.no_grad():
        before = model.encode_behaviours(batch, emb(batch).fields)[0].tokens
        lengths = (batch.behaviours["hist"] != 0).any(-1).sum(1)
        r = int(torch.nonzero(lengths > 0)[0])
        batch.behaviours["hist"][r, 0, 0] = 2 if batch.behaviours["hist"][r, 0, 0] != 2 else 3
        after = model.encode_behaviours(batch, emb(batch).fields)[0].tokens
    changed = (before - after).abs().flatten(1).sum(1) > 0
    assert changed.tolist() == [i == r for i in range(len(changed))]
