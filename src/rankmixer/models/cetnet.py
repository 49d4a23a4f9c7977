"""CETNet, Collaborative Ensemble Training Network (Liu et al. 2024, arXiv 2411.13700).

K different registered models ("members"), each built from the feature map by the registry, so
each owns its embedding tables; their predictions are fused per sample by confidence. The whole
ensemble is one module: training, export and serving see one model whose ``logits`` are the
fused prediction.

What the paper gives and what we chose (docs/production.md, "CETNet"):

* Confidence of member k on a binary prediction ``p_k``: the negative entropy ``-H(p_k)``;
  fusion weights ``w_k = softmax_k(-H(p_k) / tau)`` per sample (and per task). ``tau`` is a
  learned positive parameter (``log tau`` is learned, as a dense parameter: the recipe's
  optimizer and ``dense_l2`` apply to it) or fixed.
* Fusion happens in probability space, ``p = sum_k w_k p_k`` (a mixture of the members'
  predictions, as the paper's weighted sum of predictions), computed exactly in log space:
  ``logit(p) = LSE_k(log w_k + log sigma(z_k)) - LSE_k(log w_k + log sigma(-z_k))``. No clamp:
  the gradient of the fused BCE is the mixture's exact gradient even where a member saturates.
* The collaborative loss is not known from the paper. Ours is mutual distillation: member k
  also fits the stop-gradient mean prediction of its peers, ``KL(q_-k || p_k)`` (Bernoulli KL,
  zero when they agree), weighted by ``collab_weight``; ``collab_target: fused`` uses the
  stop-gradient fused prediction instead.
* Every member also learns from its own BCE (``member_loss_weight``) and, with ``joint`` on, from
  the fused BCE the trainer computes on ``logits``. By default the fusion weights see the members'
  predictions through a stop-gradient (``confidence_grad: false``), so a member cannot lower the
  fused loss by becoming over-confident to win weight; ``tau`` still learns from the fused loss.

``aux_loss`` carries the members' BCE, the collaborative term and the members' own auxiliary
losses (the trainer adds it to the fused BCE); ``metrics`` carries per-member diagnostics.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from rankmixer.data.batch import Batch
from rankmixer.data.feature_map import FeatureMap
from rankmixer.models import registry
from rankmixer.models.base import ModelConfig, ModelOutput, add_losses


# Members of the default ensemble: the sizes of the model parts configs/model/{dcnv2,finalmlp,
# rankmixer}.yaml, so a CETNet row and the single-model rows of a benchmark match.
DEFAULT_MEMBERS = [
    {"name": "dcnv2", "params": {"num_cross_layers": 3, "structure": "parallel", "dnn_hidden": [256, 256],
                                 "dropout": 0.1}},
    {"name": "finalmlp", "params": {"mlp1_hidden": [256, 256], "mlp2_hidden": [256], "num_heads": 1,
                                    "dropout": 0.1}},
    {"name": "rankmixer", "params": {"num_tokens": 8, "hidden_dim": 64, "num_layers": 2, "expansion": 2,
                                     "dropout": 0.1}},
]


class CETNetConfig(ModelConfig):
    members: list[registry.SubModelSpec] = Field(
        default=[registry.SubModelSpec(**m) for m in DEFAULT_MEMBERS], min_length=1,
        description="the K member models; each is built by the registry with its own embedding tables")
    fusion: Literal["confidence", "mean", "learned"] = Field(
        default="confidence", description="confidence: per-sample softmax(-entropy / tau); mean: equal "
        "weights (plain averaging); learned: one learned softmax weight per member, the same for every sample")
    tau: float = Field(default=0.1, gt=0.0, description="temperature of the confidence softmax (its initial "
                       "value when learned); entropies lie in [0, ln 2], so tau near 1 is close to plain averaging")
    tau_learned: bool = Field(default=True, description="learn tau (as log tau) from the fused loss; false: fixed")
    confidence_grad: bool = Field(default=False, description="let the fusion weights' gradient reach the "
                                  "members (false: weights from stop-gradient predictions; tau still learns)")
    joint: bool = Field(default=True, description="the fused BCE trains the members too; false: members learn "
                        "only from their own losses (independently trained, then fused)")
    member_loss_weight: float = Field(default=1.0, ge=0.0, description="weight of the mean of the members' own BCE")
    collab_weight: float = Field(default=0.5, ge=0.0, description="weight of the collaborative (mutual "
                                 "distillation) loss; 0 turns it off")
    collab_target: Literal["peers", "fused"] = Field(
        default="peers", description="what member k distils from: the mean prediction of the other members, "
        "or the fused prediction (both stop-gradient)")

    @model_validator(mode="after")
    def _check(self) -> "CETNetConfig":
        self.member_configs()  # every member validates, errors naming members[i]
        k = len(self.members)
        if k < 2 and self.fusion != "mean":
            raise ValueError(f"members: fusion {self.fusion!r} weighs several members; got {k} (use fusion: mean "
                             "for a single member)")
        if k < 2 and self.collab_weight > 0:
            raise ValueError(f"collab_weight: the collaborative loss needs at least 2 members; got {k}")
        return self

    def member_configs(self) -> list[ModelConfig]:
        """Each member's validated config: the ensemble's ``embedding_dim`` unless the member's
        ``params`` set their own."""
        return [m.parse(self.embedding_dim, f"members[{i}]", "cetnet") for i, m in enumerate(self.members)]


def bernoulli_entropy(z: Tensor) -> Tensor:
    """H(p) of p = sigmoid(z) in nats, from the logit (stable for any z):
    ``p softplus(-z) + (1 - p) softplus(z)``."""
    p = torch.sigmoid(z)
    return p * F.softplus(-z) + (1 - p) * F.softplus(z)


def mixture_logit(z: Tensor, log_w: Tensor) -> Tensor:
    """logit of ``sum_k w_k sigmoid(z_k)`` over dim 0, computed in log space (no clamping)."""
    return torch.logsumexp(log_w + F.logsigmoid(z), dim=0) - torch.logsumexp(log_w + F.logsigmoid(-z), dim=0)


def bernoulli_kl(q: Tensor, z: Tensor) -> Tensor:
    """Elementwise KL(Bernoulli(q) || Bernoulli(sigmoid(z))) = BCE(z, q) - H(q)."""
    h_q = -(torch.special.xlogy(q, q) + torch.special.xlogy(1 - q, 1 - q))
    return F.binary_cross_entropy_with_logits(z, q, reduction="none") - h_q


@registry.register("cetnet", CETNetConfig)
class CETNet(nn.Module):
    """CETNet: K heterogeneous models with their own embeddings, trained collaboratively and fused per sample by confidence softmax(-entropy / tau) (Liu et al. 2024, "A Collaborative Ensemble Framework for CTR Prediction").

    See the module docstring for the fusion, the temperature and the collaborative loss.
    """

    def __init__(self, feature_map: FeatureMap, cfg: CETNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.member_labels = [f"m{i}_{m.name}" for i, m in enumerate(cfg.members)]
        self.members = nn.ModuleList(registry.build_model(m.name, feature_map, c)
                                     for m, c in zip(cfg.members, cfg.member_configs(), strict=True))
        k = len(self.members)
        log_tau = torch.tensor(math.log(cfg.tau))
        if cfg.fusion == "confidence" and cfg.tau_learned:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)
        # Learned fusion: one logit per member, zero = plain averaging at the start.
        self.fusion_logits = nn.Parameter(torch.zeros(k)) if cfg.fusion == "learned" else None

    @property
    def tau(self) -> Tensor:
        return self.log_tau.exp()

    def fusion_log_weights(self, z: Tensor) -> Tensor:
        """log w over members (dim 0), broadcastable to ``z`` [K, B, T]."""
        k = z.shape[0]
        if self.cfg.fusion == "mean":
            return torch.full((k, 1, 1), -math.log(k), dtype=z.dtype, device=z.device)
        if self.cfg.fusion == "learned":
            return torch.log_softmax(self.fusion_logits, dim=0).view(k, 1, 1)
        src = z if self.cfg.confidence_grad else z.detach()
        return torch.log_softmax(-bernoulli_entropy(src) / self.tau, dim=0)

    def forward(self, batch: Batch) -> ModelOutput:
        outs = [m(batch) for m in self.members]
        for label, o in zip(self.member_labels, outs, strict=True):
            if o.exit_logits is not None:
                raise ValueError(f"cetnet member {label}: early-exit members are not supported (turn early_exit off)")
        # [K, B, T], at least float32 (members may run under bf16 autocast; a float64 model stays so)
        z = torch.stack([o.logits.to(torch.promote_types(o.logits.dtype, torch.float32)) for o in outs])
        log_w = self.fusion_log_weights(z)
        fused = mixture_logit(z if self.cfg.joint else z.detach(), log_w)
        if not self.training:
            return ModelOutput(logits=fused)
        y = batch.labels.float()
        member_bce = torch.stack([F.binary_cross_entropy_with_logits(zk, y) for zk in z])  # [K]
        collab = self.collab_loss(z, fused) if self.cfg.collab_weight > 0 else None
        aux = add_losses(self.cfg.member_loss_weight * member_bce.mean(),
                         None if collab is None else self.cfg.collab_weight * collab,
                         *(o.aux_loss for o in outs))
        with torch.no_grad():
            weights = log_w.exp().expand_as(z).mean(dim=(1, 2))
            metrics = {"cetnet/tau": float(self.tau)}
            for i, label in enumerate(self.member_labels):
                metrics[f"cetnet/{label}/bce"] = float(member_bce[i])
                metrics[f"cetnet/{label}/weight"] = float(weights[i])
            if collab is not None:
                metrics["cetnet/collab"] = float(collab)
            for label, o in zip(self.member_labels, outs, strict=True):
                metrics.update({f"cetnet/{label}/{k}": v for k, v in o.metrics.items()})
        return ModelOutput(logits=fused, aux_loss=aux, metrics=metrics)

    def collab_loss(self, z: Tensor, fused: Tensor) -> Tensor:
        """Mean over members of ``KL(q_k || p_k)``: ``q_k`` the stop-gradient mean probability of
        the other members (``collab_target: peers``) or of the fused prediction (``fused``)."""
        p = torch.sigmoid(z).detach()
        if self.cfg.collab_target == "peers":
            q = (p.sum(dim=0, keepdim=True) - p) / (z.shape[0] - 1)
        else:
            q = torch.sigmoid(fused).detach().expand_as(z)
        return torch.stack([bernoulli_kl(q[k], z[k]).mean() for k in range(z.shape[0])]).mean()
