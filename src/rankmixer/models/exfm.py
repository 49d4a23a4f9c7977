"""ExFM's vertical model (Liang et al., "External Large Foundation Model: How to Efficiently
Serve Trillions of Parameters for Online Ads Recommendation", WWW'25, arXiv 2502.17494): a
small student that learns from a foundation model's logged predictions (``Batch.teacher``,
joined to its rows by the data-augmentation job, rankmixer.distill).

The student is any registered model built with twice the tasks: its first T outputs are the
**serving head** (trained on the true labels by the trainer; all that predict, export and
serving see), its last T the **auxiliary head**, an isolated task tower on the same
representation. What learns the teacher (``distill``):

* ``none``: nothing, the student alone (no auxiliary head is built);
* ``serving``: plain distillation, the serving head also fits the teacher:
  ``w * BCE(z_serving, target)``;
* ``auxiliary``: only the auxiliary head fits it: ``w * BCE(z_aux, target)``; the serving head
  sees true labels alone, so the teacher's bias reaches it only through the shared
  representation (the paper's Auxiliary Head).

**Student adapter** (``adapter: true``, the paper's Student Adapter): per task, the teacher's
logit ``t`` is mapped by ``a(t) = w t + b + MLP(t)``, an affine recalibration (w = 1, b = 0 at
first) plus a small MLP whose output layer starts at zero, so the adapter starts as the
identity. It is trained on the true labels, ``BCE(a(t), y)``, with ``t`` fixed, and the
distillation target is ``sigmoid(a(t))`` held fixed. A stale teacher's predictions are so
mapped onto today's label distribution before they teach the student. The paper gives the
adapter's role, not its form; this form is our choice: the affine part learns a shift or a
change of confidence at once, the MLP any other monotone or not (docs/production.md).

A row without a teacher prediction (NaN) takes its true label as the target; the share of rows
with one is logged as ``teacher_coverage``.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models.base import ModelConfig, ModelOutput, add_losses
from rankmixer.models.registry import SubModelSpec, build_model, register

_EPS = 1e-6  # teacher probabilities are clamped to [eps, 1 - eps] before their logit


class ExFMConfig(ModelConfig):
    # The student: a registered model and its config, e.g. {name: dcnv2, params: {dnn_hidden:
    # [64, 64]}}; its embedding_dim defaults to this config's.
    student: SubModelSpec = SubModelSpec(name="dcnv2")
    distill: Literal["none", "serving", "auxiliary"] = "auxiliary"
    adapter: bool = False
    distill_weight: float = Field(1.0, ge=0.0)  # w above
    adapter_hidden: int = Field(16, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "ExFMConfig":
        self.student.parse(self.embedding_dim, "student", "exfm")  # a bad student names its key here
        if self.adapter and self.distill == "none":
            raise ValueError("adapter: the student adapter maps teacher predictions for distillation; "
                             "it needs distill serving or auxiliary")
        return self


class StudentAdapter(nn.Module):
    """Per task, ``a(t) = w t + b + MLP(t)`` on the teacher's logit; the identity at
    initialisation."""

    def __init__(self, num_tasks: int, hidden: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(num_tasks))
        self.shift = nn.Parameter(torch.zeros(num_tasks))
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(1, hidden), nn.ReLU(), nn.Linear(hidden, 1))
                                  for _ in range(num_tasks))
        for mlp in self.mlps:
            nn.init.zeros_(mlp[2].weight)
            nn.init.zeros_(mlp[2].bias)

    def forward(self, t: Tensor) -> Tensor:  # [B, T] -> [B, T]
        residual = torch.cat([mlp(t[:, i : i + 1]) for i, mlp in enumerate(self.mlps)], dim=1)
        return self.scale * t + self.shift + residual


@register("exfm", ExFMConfig, needs="teacher predictions in the data (schema teacher_columns)")
class ExFMStudent(nn.Module):
    def __init__(self, feature_map: FeatureMap, cfg: ExFMConfig) -> None:
        super().__init__()
        if cfg.distill != "none" and not feature_map.teacher_labels:
            raise ValueError(f"model exfm with distill={cfg.distill} needs teacher predictions in the data "
                             "(schema teacher_columns; rankmixer distill augment joins them to the rows)")
        self.cfg = cfg
        self.num_tasks = feature_map.num_tasks
        params = cfg.student.parse(cfg.embedding_dim, "student", "exfm")
        heads = feature_map
        if cfg.distill == "auxiliary":  # one more task tower per task: the auxiliary head
            heads = dataclasses.replace(feature_map, labels=[*feature_map.labels,
                                                             *(f"{t}__aux" for t in feature_map.labels)])
        self.student = build_model(cfg.student.name, heads, params)
        self.adapter = StudentAdapter(self.num_tasks, cfg.adapter_hidden) if cfg.adapter else None

    def forward(self, batch: Batch) -> ModelOutput:
        out = self.student(batch)
        T = self.num_tasks
        serving = out.logits[:, :T]
        if not self.training or self.cfg.distill == "none" or batch.teacher is None:
            return ModelOutput(serving, out.aux_loss, out.metrics)
        distill, extra = self.distill_loss(out.logits, batch.teacher, batch.labels)
        return ModelOutput(serving, add_losses(out.aux_loss, distill), {**out.metrics, **extra})

    def distill_loss(self, logits: Tensor, teacher: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        """The distillation term (and the adapter's own loss) for the student's raw outputs
        ``logits`` [B, T or 2T], the teacher's probabilities [B, T] (NaN: none) and the labels."""
        T = self.num_tasks
        has = ~torch.isnan(teacher)
        t_logit = torch.logit(torch.where(has, teacher, 0.5).float().clamp(_EPS, 1 - _EPS))
        losses = []
        if self.adapter is not None:
            adapted = self.adapter(t_logit)
            if has.any():
                losses.append(F.binary_cross_entropy_with_logits(adapted[has], labels[has]))
            target = torch.sigmoid(adapted).detach()
        else:
            target = torch.sigmoid(t_logit)
        target = torch.where(has, target, labels)
        z = logits[:, T:] if self.cfg.distill == "auxiliary" else logits[:, :T]
        losses.append(self.cfg.distill_weight * F.binary_cross_entropy_with_logits(z.float(), target))
        return add_losses(*losses), {"teacher_coverage": float(has.float().mean())}
