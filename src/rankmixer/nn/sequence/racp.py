"""RACP: page-context-aware recurrent attention over a user's pages of exposures (Chen et al.,
WSDM 2022, arXiv 2203.15542).

The history is the user's last ``P`` pages (requests) of up to ``I`` exposed items, each with its
feedback (clicked or not): a page behaviour (:func:`~rankmixer.nn.sequence.pages.page_grid`
gives ``[B, P, I, F, d]``). Per page, oldest to newest:

1. **Intra-page context.** Each exposure ``e_pi`` (its fields, feedback included, concatenated
   and projected to ``H``) is read against its page: ``h_pi = MLP([e_pi, c_p, e_pi - c_p])``,
   ``c_p`` the page's mean exposure. So a click among unclicked neighbours and a click on a
   page clicked all over give different vectors.
2. **Recurrent attention.** A query ``q`` starts as the candidate (its fields shared with the
   history, projected to ``H``); page ``p`` is read by attention with the current query,
   ``a_pi = softmax_i(w . tanh(W [h_pi, q, h_pi * q]))`` over the page's items, ``v_p =
   sum_i a_pi h_pi``, and a GRU cell moves the query on, ``q <- GRU(v_p, q)``; an empty page
   leaves ``q`` as it was.
3. **Page-level target attention.** DIN's activation unit scores every page vector against the
   candidate, ``u = sum_p a(v_p, q_0) v_p`` (unnormalised, as DIN).

Output: two ``H``-wide vectors, ``u`` and the final query. The paper gives the three stages and
the MLP on top ([200, 80], PReLU); the forms of the intra-page read (mean page context through
an MLP), the additive attention and the unnormalised page weights are our choices, stated here
and tested against a float64 loop (``tests/nn/test_racp.py``).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from rankmixer.core.strict import StrictModel
from rankmixer.nn.mlp import MLP
from rankmixer.nn.sequence.base import BehaviourInput, BehaviourSpec, EncoderOutput, register_encoder
from rankmixer.nn.sequence.pages import page_grid
from rankmixer.nn.tokenizer import activation_weights


class RACPConfig(StrictModel):
    hidden: int = Field(default=32, ge=1, description="H: width of exposures, page vectors and the query")
    context_hidden: list[int] = Field(default=[64], description="hidden widths of the intra-page context MLP")
    attention_dim: int = Field(default=32, ge=1, description="width of the additive attention inside a page")
    page_attention_hidden: list[int] = Field(default=[80, 40], description="activation unit over the pages")
    page_size: int | None = Field(default=None, ge=1, description="I: items per page (default: max_len / pages)")


@register_encoder("racp", RACPConfig)
class RACPEncoder(nn.Module):
    """See the module docstring. Needs a behaviour with a page field (``sessions``)."""

    def __init__(self, cfg: RACPConfig, dim: int, spec: BehaviourSpec, num_context: int) -> None:
        super().__init__()
        if spec.session is None:
            raise ValueError(f"sequence module racp: behaviour {spec.name!r} has no page field (a `sessions` field "
                             "cutting its positions into pages); see rankmixer.data.datasets.impressions")
        if not spec.keys:
            raise ValueError(f"sequence module racp: behaviour {spec.name!r} shares no field with the candidate")
        self.pages = spec.max_sessions
        self.page_size = cfg.page_size or -(-spec.max_len // self.pages)
        self.keys = list(spec.keys)
        H = cfg.hidden
        self.item = nn.Linear(spec.num_fields * dim, H)
        self.query = nn.Linear(len(self.keys) * dim, H)
        self.context = MLP(3 * H, cfg.context_hidden, H, activation="prelu")
        self.att = nn.Linear(3 * H, cfg.attention_dim)
        self.att_out = nn.Linear(cfg.attention_dim, 1, bias=False)
        self.gru = nn.GRUCell(H, H)
        self.page_unit = MLP(4 * H, cfg.page_attention_hidden, 1, activation="prelu")
        self.num_outputs, self.out_dim = 2, H

    def forward(self, x: BehaviourInput) -> EncoderOutput:
        if x.sessions is None:
            raise ValueError("sequence module racp needs the page indices (BehaviourInput.sessions)")
        B, L = x.mask.shape
        e = self.item(x.hist.reshape(B, L, -1))  # [B, L, H]
        grid, gmask = page_grid(e, x.mask, x.sessions, self.pages, self.page_size)  # [B, P, I, H]
        m = gmask.unsqueeze(-1).to(e.dtype)
        n = gmask.sum(-1, keepdim=True).clamp(min=1).unsqueeze(-1).to(e.dtype)
        ctx = ((grid * m).sum(2, keepdim=True) / n).expand_as(grid)
        h = self.context(torch.cat([grid, ctx, grid - ctx], dim=-1)) * m  # [B, P, I, H]
        q0 = self.query(x.query.reshape(B, -1))  # [B, H]
        q, pages = q0, []
        for p in range(self.pages):
            hp, mp = h[:, p], gmask[:, p]  # [B, I, H], [B, I]
            qe = q.unsqueeze(1).expand_as(hp)
            s = self.att_out(torch.tanh(self.att(torch.cat([hp, qe, hp * qe], dim=-1)))).squeeze(-1)
            a = s.masked_fill(~mp, torch.finfo(s.dtype).min).softmax(-1) * mp
            v = (a.unsqueeze(-1) * hp).sum(1)  # [B, H]
            present = mp.any(-1, keepdim=True)
            q = torch.where(present, self.gru(v, q), q)
            pages.append(v)
        v = torch.stack(pages, dim=1)  # [B, P, H]
        w = activation_weights(self.page_unit, v, gmask.any(-1), q0, softmax=False)
        u = (w.unsqueeze(-1) * v).sum(1)
        return EncoderOutput(torch.stack([u, q], dim=1))
