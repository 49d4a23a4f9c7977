"""DIEN's interest extractor and interest evolution (Zhou et al. 2019, arXiv 1809.03672).

One behaviour ``[B, L, F, d]``, every position's fields concatenated, ``e_t`` (``w = F * d``):

1. **Interest extractor**: a GRU over ``e_1..e_T`` (``torch.nn.GRU``), states ``h_t``. Pads sit
   at the end and the GRU is causal, so the state at a real position never sees a pad; states
   at pad positions are computed and then masked out of everything below.
2. **Auxiliary loss** (the paper's eq. 5), training only: for each ``t < len - 1``,
   ``-log sigmoid(<h_t, e_{t+1}>) - log(1 - sigmoid(<h_t, e'_{t+1}>))`` with the negative
   ``e'_{t+1}`` the behaviour at position ``t + 1`` of another row of the batch (rows rolled by
   a random offset in ``[1, B)``: never the row itself), averaged over the pairs where both
   position ``t + 1`` of the row and of the other row are real, times ``aux_loss_weight``.
   ``h_t`` is mapped to ``w`` by a linear layer if ``hidden != w``.
3. **Attention** against the candidate (the paper's bilinear form):
   ``a_t = softmax_t(h_t W q)`` over the real positions, ``q`` the candidate's vectors of the
   fields the behaviour shares with the row (``spec.keys``). A behaviour sharing none has no
   candidate to attend to: ``a_t = 1`` (AUGRU is then a plain GRU).
4. **Interest evolution**: AUGRU, a GRU whose update gate is scaled by the attention,
   ``u'_t = a_t u_t``, ``h'_t = (1 - u'_t) h'_{t-1} + u'_t h~_t`` (:func:`augru`), run over the
   positions in a loop; pad positions keep the state, so the output is the state at each row's
   last real position (zeros for an empty history).

Output: ``[B, 1, hidden]``, the final AUGRU state (what the paper feeds to its MLP; the
candidate and the rest of the row are the model's other inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from rankmixer.core.strict import StrictModel
from rankmixer.nn.sequence.base import BehaviourInput, BehaviourSpec, EncoderOutput, register_encoder

__all__ = ["AUGRU", "DIENEncoder", "DIENEncoderConfig", "augru", "interest_aux_loss", "negative_rows"]


def negative_rows(
    batch_size: int, device: torch.device | str = "cpu", generator: torch.Generator | None = None
) -> Tensor:
    """``[B]`` row indices: row ``b``'s negatives come from row ``(b + k) % B``, ``k`` drawn
    uniformly from ``[1, B)`` (so never the row itself; ``B = 1`` gives itself)."""
    k = int(torch.randint(1, batch_size, (1,), generator=generator)) if batch_size > 1 else 0
    return (torch.arange(batch_size) + k).remainder(batch_size).to(device)


def interest_aux_loss(states: Tensor, inputs: Tensor, mask: Tensor, negatives: Tensor) -> Tensor:
    """DIEN's auxiliary loss (module docstring, step 2): ``states [B, L, w]`` (already in the
    inputs' width), ``inputs [B, L, w]``, ``mask [B, L]``, ``negatives [B]`` the row whose
    position ``t + 1`` is row ``b``'s negative. Zero when no pair is valid."""
    h, pos, neg = states[:, :-1], inputs[:, 1:], inputs[negatives, 1:]
    valid = mask[:, 1:] & mask[negatives, 1:]
    pos_logit, neg_logit = (h * pos).sum(-1), (h * neg).sum(-1)
    # -log sigmoid(x) = softplus(-x); -log(1 - sigmoid(x)) = softplus(x)
    per_pair = F.softplus(-pos_logit) + F.softplus(neg_logit)
    return torch.where(valid, per_pair, 0.0).sum() / valid.sum().clamp_min(1).to(per_pair.dtype)


def augru(gates_x: Tensor, mask: Tensor, attention: Tensor, hidden: nn.Linear) -> Tensor:
    """AUGRU over ``L`` positions -> the final state ``[B, H]``.

    ``gates_x [B, L, 3H]``: the input's part of the reset, update and candidate gates (one
    matmul for all positions, outside the loop); ``hidden``: ``Linear(H, 3H)``, the state's part.
    Per position, with ``[r, u, n]`` the three slices (PyTorch's GRU order of reset and
    candidate, the paper's update convention):
    ``r = sigmoid(x_r + h_r)``, ``u = sigmoid(x_u + h_u)``, ``h~ = tanh(x_n + r * h_n)``,
    ``u' = a * u``, ``h' = (1 - u') h + u' h~``; where ``mask`` is False the state is kept."""
    B, L, three_h = gates_x.shape
    h = gates_x.new_zeros(B, three_h // 3)
    # unbind, not gates_x[:, t]: indexing one position per step would make the backward write a
    # zero-filled [B, L, 3H] gradient per step (quadratic in L); unbind's backward stacks once.
    for g_t, a_t, m_t in zip(gates_x.unbind(1), attention.unbind(1), mask.unbind(1)):
        x_r, x_u, x_n = g_t.chunk(3, dim=-1)
        h_r, h_u, h_n = hidden(h).chunk(3, dim=-1)
        r, u = torch.sigmoid(x_r + h_r), torch.sigmoid(x_u + h_u)
        cand = torch.tanh(x_n + r * h_n)
        u = a_t.unsqueeze(-1) * u
        h = torch.where(m_t.unsqueeze(-1), (1 - u) * h + u * cand, h)
    return h


class AUGRU(nn.Module):
    """The weights of :func:`augru`: ``input`` ``Linear(in, 3H)``, ``hidden`` ``Linear(H, 3H)``."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.input = nn.Linear(in_dim, 3 * hidden)
        self.hidden = nn.Linear(hidden, 3 * hidden)

    def forward(self, x: Tensor, mask: Tensor, attention: Tensor) -> Tensor:
        return augru(self.input(x), mask, attention, self.hidden)


class DIENEncoderConfig(StrictModel):
    hidden: int | None = Field(default=None, ge=1, description="width of both GRUs; default the behaviour's "
                               "F * d input width, as the paper")
    aux_loss_weight: float = Field(default=1.0, ge=0.0, description="weight of the auxiliary loss (the "
                                   "paper's alpha); 0 disables it")


@register_encoder("dien", DIENEncoderConfig)
class DIENEncoder(nn.Module):
    """DIEN over one behaviour: ``[B, 1, hidden]`` (see the module docstring)."""

    def __init__(self, cfg: DIENEncoderConfig, dim: int, spec: BehaviourSpec, num_context: int) -> None:
        super().__init__()
        self.cfg, self.keys = cfg, list(spec.keys)
        width = spec.num_fields * dim
        hidden = cfg.hidden or width
        self.num_outputs, self.out_dim = 1, hidden
        self.extractor = nn.GRU(width, hidden, batch_first=True)
        # The aux loss compares h_t with e_{t+1}: a map to the input width if the two differ.
        self.aux_proj = nn.Linear(hidden, width, bias=False) if hidden != width and cfg.aux_loss_weight > 0 else None
        # Bilinear h_t W q, computed as h_t . (W q): one map of the candidate per row.
        self.attention = nn.Linear(len(self.keys) * dim, hidden, bias=False) if self.keys else None
        self.evolution = AUGRU(hidden, hidden)
        # Draws the aux loss's negative rows; None = torch's global generator. Tests set it.
        self.generator: torch.Generator | None = None

    def scores(self, states: Tensor, query: Tensor, mask: Tensor) -> Tensor:
        """``[B, L]`` attention of every extractor state against the candidate, softmax over the
        real positions (zero at pads and for an empty history); all ones without a query."""
        if self.attention is None:
            return mask.to(states.dtype)
        wq = self.attention(query.reshape(query.shape[0], -1))  # [B, H]
        logits = (states @ wq.unsqueeze(-1)).squeeze(-1)
        logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        return logits.softmax(dim=-1) * mask

    def forward(self, x: BehaviourInput) -> EncoderOutput:
        B, L = x.mask.shape
        e = x.hist.reshape(B, L, -1)
        states, _ = self.extractor(e)  # causal: real positions never see the pads at the end
        aux = None
        if self.training and self.cfg.aux_loss_weight > 0:
            h = states if self.aux_proj is None else self.aux_proj(states)
            negatives = negative_rows(B, e.device, self.generator)
            aux = self.cfg.aux_loss_weight * interest_aux_loss(h, e, x.mask, negatives)
        a = self.scores(states, x.query, x.mask)
        final = self.evolution(states, x.mask, a)
        return EncoderOutput(final.unsqueeze(1), aux)
