"""ExFM's student: the distillation terms against hand computations in float64, the serving head
untouched by the auxiliary head's target, the adapter's identity start and its training on true
labels, the hard-label fallback, and config errors."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from rankmixer.models import registry
from rankmixer.models.exfm import ExFMConfig
from tests.factories import SMALL, check_output_and_gradients, make_feature_map, random_batch

STUDENT = {"name": "dcnv2", "params": SMALL["dcnv2"]}


def _fm():
    return dataclasses.replace(make_feature_map(num_tasks=2), teacher_labels=["t0", "t1"])


def _batch(fm, teacher: torch.Tensor | None = None, B: int = 32):
    b = random_batch(fm, B, torch.Generator().manual_seed(3))
    if teacher is None:
        teacher = torch.rand(B, 2, generator=torch.Generator().manual_seed(4)) * 0.9 + 0.05
    return dataclasses.replace(b, teacher=teacher)


def _bce(z: torch.Tensor, y: torch.Tensor) -> float:
    """Mean binary cross-entropy in float64, by its formula."""
    z, y = z.double(), y.double()
    p = 1 / (1 + torch.exp(-z))
    return float(-(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean())


def _model(**cfg):
    torch.manual_seed(0)
    return registry.build_model("exfm", _fm(), {"student": STUDENT, **cfg})


@pytest.mark.parametrize("distill", ["serving", "auxiliary"])
def test_distillation_term_by_hand(distill):
    model = _model(distill=distill, distill_weight=0.7)
    fm = _fm()
    batch = _batch(fm)
    teacher = batch.teacher.clone()
    teacher[::5, 1] = float("nan")  # rows without a teacher prediction fall back to the label
    batch = dataclasses.replace(batch, teacher=teacher)
    model.train()
    raw = model.student(batch).logits
    out = model(batch)
    assert out.logits.shape == (32, 2)
    torch.testing.assert_close(out.logits, raw[:, :2])  # the serving head is what is served
    z = raw[:, 2:] if distill == "auxiliary" else raw[:, :2]
    target = torch.where(torch.isnan(teacher), batch.labels, teacher)
    assert float(out.aux_loss.detach()) == pytest.approx(0.7 * _bce(z, target), rel=1e-5)
    assert out.metrics["teacher_coverage"] == pytest.approx(1 - 7 / 64)
    assert raw.shape[1] == (4 if distill == "auxiliary" else 2)


def test_auxiliary_target_reaches_the_serving_head_only_through_the_shared_layers():
    """With distill=auxiliary the serving tower's own weights get no gradient from the teacher
    term; with distill=serving they do."""
    for distill, expect_grad in (("auxiliary", False), ("serving", True)):
        model = _model(distill=distill)
        model.train()
        out = model(_batch(_fm()))
        out.aux_loss.backward()
        head = model.student.heads.linear  # one Linear(in, 2T or T): rows 0..T-1 serve
        assert (head.weight.grad[:2].abs().sum() > 0) == expect_grad
        if distill == "auxiliary":
            assert head.weight.grad[2:].abs().sum() > 0


def test_adapter_starts_as_the_identity_and_learns_on_true_labels():
    model = _model(distill="auxiliary", adapter=True, adapter_hidden=4)
    fm = _fm()
    batch = _batch(fm)
    model.train()
    raw = model.student(batch).logits
    out = model(batch)
    t = torch.logit(batch.teacher.double())
    # identity adapter: the adapter's loss is BCE(t, y), the target sigmoid(t) = the teacher
    expected = _bce(t, batch.labels) + _bce(raw[:, 2:], batch.teacher)
    assert float(out.aux_loss.detach()) == pytest.approx(expected, rel=1e-5)
    # Trained alone on labels that a stale teacher gets backwards, the adapter learns to flip it.
    y = (torch.rand(4096, 1, generator=torch.Generator().manual_seed(1)) < 0.5).float().repeat(1, 2)
    stale = torch.where(y > 0, 0.2, 0.8)
    opt = torch.optim.Adam(model.adapter.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.adapter(torch.logit(stale)), y)
        loss.backward()
        opt.step()
    adapted = torch.sigmoid(model.adapter(torch.logit(stale)))
    assert float(adapted[y > 0].mean()) > 0.9 and float(adapted[y == 0].mean()) < 0.1


def test_evaluation_and_student_alone_have_no_distillation():
    model = _model(distill="auxiliary")
    model.eval()
    assert model(_batch(_fm())).aux_loss is None
    alone = registry.build_model("exfm", make_feature_map(num_tasks=2), {"student": STUDENT, "distill": "none"})
    alone.train()
    out = alone(random_batch(make_feature_map(num_tasks=2), 16))
    assert out.aux_loss is None and out.logits.shape == (16, 2)


def test_contract_output_and_gradients():
    """The conformance contract (the task loss alone: the adapter learns from the distillation
    term, tested above)."""
    model = _model(distill="auxiliary")
    model.train()
    check_output_and_gradients("exfm", model, _batch(_fm()), 2)


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match="needs teacher predictions in the data"):
        registry.build_model("exfm", make_feature_map(num_tasks=2), {"student": STUDENT})
    with pytest.raises(ValueError, match="adapter"):
        ExFMConfig(distill="none", adapter=True)
    with pytest.raises(ValueError, match="name"):
        ExFMConfig(student={"params": {"dnn_hidden": [4]}})
    with pytest.raises(ValueError, match="student.params: .*dnn_hidde"):
        registry.build_model("exfm", _fm(), {"student": {"name": "dcnv2", "params": {"dnn_hidde": [4]}}})
    with pytest.raises(ValueError, match="student.name: a exfm model cannot hold another exfm"):
        ExFMConfig(student={"name": "exfm"})
    with pytest.raises(ValueError, match="student.name: unknown model 'dcnv3'"):
        ExFMConfig(student={"name": "dcnv3"})
    assert math.isfinite(ExFMConfig().distill_weight)
