"""RankMixer's sequence tokens: behaviours encoded by a sequence module become fields of their
own group, checked against a float64 loop, with pad invariance and the auxiliary loss carried."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rankmixer.core.strict import StrictModel
from rankmixer.data.loader import ParquetBatches, make_loader
from rankmixer.models import registry
from rankmixer.models.rankmixer import rankmixer_flops_per_sample
from rankmixer.nn.sequence import EncoderOutput, register_encoder

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"embedding_dim": 4, "num_tokens": 4, "hidden_dim": 16, "num_layers": 1}


class ConstantAuxConfig(StrictModel):
    loss: float = 0.25


@register_encoder("test-constant-aux", ConstantAuxConfig)
class ConstantAux(nn.Module):
    """Mean of the first field, with a constant auxiliary loss (tests the plumbing only)."""

    def __init__(self, cfg, dim, spec, num_context):
        super().__init__()
        self.cfg, self.num_outputs, self.out_dim = cfg, 1, 3  # 3 is not a multiple of d: projected

    def forward(self, x):
        pooled = x.hist[:, :, 0, :3].sum(dim=1, keepdim=True)
        return EncoderOutput(pooled, torch.tensor(self.cfg.loss, dtype=pooled.dtype))


def first_batch(fm, rows=32):
    return next(iter(make_loader(ParquetBatches(fm, "train", rows, shuffle=False))))


def test_mean_sequence_fields_match_a_float64_loop(behaviour_data):
    fm = behaviour_data
    model = registry.build_model("rankmixer", fm, SMALL).double().eval()
    with torch.no_grad():
        model.embedding.weight.normal_(0.0, 0.5)
        model.embedding.weight[0].zero_()
    seq = model.sequence
    assert seq.names == ["hist.0", "hist.1", "hist.2", "hist.3"]  # one field per per-position field
    assert seq.feature_groups["user"] == ["user", *seq.names]  # the behaviour's place in its group
    batch = first_batch(fm)
    emb = model.embedding
    with torch.no_grad():
        got, aux = seq(emb, batch, emb(batch).fields)
    assert aux is None
    ids = batch.behaviours["hist"]
    meta = emb.behaviour_fields["hist"]
    for r in range(ids.shape[0]):
        positions = [p for p in range(ids.shape[1]) if (ids[r, p] != 0).any()]
        for k, b in enumerate(meta):
            vecs = [emb.weight[ids[r, p, k] + emb.table_offsets[b.table]] if ids[r, p, k] else torch.zeros(4, dtype=torch.float64)
                    for p in positions]
            expected = sum(vecs) / len(vecs) if vecs else torch.zeros(4, dtype=torch.float64)
            torch.testing.assert_close(got[r, k], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("module", ["mean", "din", "dien", "pyramid", "interformer"])
def test_pad_positions_do_not_change_the_scores(behaviour_data, module):
    fm = behaviour_data
    torch.manual_seed(0)
    model = registry.build_model("rankmixer", fm, {**SMALL, "sequence_module": module}).double().eval()
    batch = first_batch(fm)
    ids = batch.behaviours["hist"]
    pad = (ids == 0).all(dim=-1, keepdim=True)  # [B, L, 1] positions without a behaviour
    assert pad.any() and not pad.all()
    with torch.no_grad():
        before = model(batch).logits
        batch.behaviours["hist"] = torch.where(pad, torch.zeros_like(ids), ids)  # unchanged
        assert torch.equal(model(batch).logits, before)
        # the tokens count is T whatever the number of behaviour fields
        assert model.tokens(batch).shape == (ids.shape[0], SMALL["num_tokens"], SMALL["hidden_dim"])


def test_din_sequence_module_differs_from_mean_and_trains(behaviour_data):
    fm = behaviour_data
    torch.manual_seed(0)
    model = registry.build_model("rankmixer", fm, {**SMALL, "sequence_module": "din",
                                                   "sequence_options": {"attention_hidden": [8]}})
    batch = first_batch(fm)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    out = model(batch)
    loss = nn.functional.binary_cross_entropy_with_logits(out.logits, batch.labels.float())
    loss.backward()
    unit = model.sequence.encoders["hist"].unit
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unit.parameters())
    opt.step()


def test_dien_auxiliary_loss_is_added_in_training_only(behaviour_data):
    torch.manual_seed(0)
    model = registry.build_model("rankmixer", behaviour_data, {**SMALL, "sequence_module": "dien"})
    batch = first_batch(behaviour_data)
    out = model(batch)
    assert out.aux_loss is not None and float(out.aux_loss) > 0  # BCE of the interest extractor
    model.eval()
    assert model(batch).aux_loss is None


def test_encoder_aux_loss_reaches_the_model_output(behaviour_data):
    fm = behaviour_data
    model = registry.build_model("rankmixer", fm, {**SMALL, "sequence_module": "test-constant-aux",
                                                   "sequence_options": {"loss": 0.5}})
    assert isinstance(model.sequence.proj["hist"], nn.Linear)  # out_dim 3 -> one field of d = 4
    assert model.sequence.names == ["hist.0"]
    out = model(first_batch(fm))
    assert out.aux_loss is not None and float(out.aux_loss) == pytest.approx(0.5)


def test_bad_sequence_module_is_a_clear_error(behaviour_data):
    with pytest.raises(ValueError, match="unknown sequence module 'lstm'.*known"):
        registry.build_model("rankmixer", behaviour_data, {**SMALL, "sequence_module": "lstm"})
    with pytest.raises(ValueError, match="sequence module 'din': bad options"):
        registry.build_model("rankmixer", behaviour_data, {**SMALL, "sequence_module": "din",
                                                          "sequence_options": {"heads": 2}})


def test_closed_form_count_refuses_behaviours(behaviour_data):
    with pytest.raises(ValueError, match="does not cover sequence modules"):
        rankmixer_flops_per_sample(SMALL, behaviour_data)


def test_models_without_an_encoder_see_behaviours_mean_pooled(behaviour_data):
    """``FeatureEmbedding(pool_behaviours=True)``: one field per per-position field, its mean
    over the real positions (float64 loop), after the other fields."""
    from rankmixer.nn.embedding import FeatureEmbedding

    fm = behaviour_data
    emb = FeatureEmbedding(fm, 3).double()
    with torch.no_grad():
        emb.weight.normal_(0.0, 1.0)
        emb.weight[0].zero_()
    names = emb.field_names
    assert names[-4:] == ["hist.item", "hist.cat", "hist.type", "hist.dt"]
    batch = first_batch(fm)
    with torch.no_grad():
        fields = emb(batch).fields
    ids = batch.behaviours["hist"]
    for r in range(ids.shape[0]):
        positions = [p for p in range(ids.shape[1]) if (ids[r, p] != 0).any()]
        for k, b in enumerate(emb.behaviour_fields["hist"]):
            rows = [emb.weight[ids[r, p, k] + emb.table_offsets[b.table]] if ids[r, p, k] else torch.zeros(3, dtype=torch.float64)
                    for p in positions]
            expected = sum(rows) / len(rows) if rows else torch.zeros(3, dtype=torch.float64)
            torch.testing.assert_close(fields[r, len(names) - 4 + k], expected, rtol=1e-10, atol=1e-12)
    dcn = registry.build_model("dcnv2", fm, {"embedding_dim": 3})
    assert dcn.embedding.field_names[-4:] == names[-4:]  # a model that knows nothing of behaviours
