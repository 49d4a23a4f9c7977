"""RACP (nn/sequence/racp.py) and the page grid (nn/sequence/pages.py) against float64 loops
written from the docstrings, the encoder's errors, and RACP as a model and as RankMixer's
sequence module on the impressions preset."""

from __future__ import annotations

import math

import pytest
import torch

from rankmixer.models import registry
from rankmixer.nn.sequence.base import BehaviourInput, BehaviourSpec, build_encoder
from rankmixer.nn.sequence.pages import page_grid
from tests.factories import SMALL

P, I, F, D = 3, 2, 3, 4
SPEC = BehaviourSpec(name="pages", num_fields=F, max_len=P * I, keys=(0, 1), query=(0, 1), session=2, max_sessions=P)


def layout(page_sizes: list[int], L: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mask and page index (from the newest) of one row whose pages, oldest first, have these sizes."""
    pages, n = [], len(page_sizes)
    for k, size in enumerate(page_sizes):
        pages += [n - 1 - k] * size
    real = len(pages)
    return (torch.arange(L) < real), torch.tensor(pages + [-1] * (L - real))


def grid_loop(values, mask, pages, num_pages, page_size):
    B, L = mask.shape
    grid = torch.zeros(B, num_pages, page_size, *values.shape[2:], dtype=values.dtype)
    gmask = torch.zeros(B, num_pages, page_size, dtype=torch.bool)
    for b in range(B):
        slot, last = 0, None
        for l in range(L):
            if not mask[b, l]:
                continue
            p = int(pages[b, l])
            slot = slot + 1 if p == last else 0
            last = p
            if p < num_pages and slot < page_size:
                grid[b, num_pages - 1 - p, slot] = values[b, l]
                gmask[b, num_pages - 1 - p, slot] = True
    return grid, gmask


def test_page_grid_against_a_loop():
    rows = [[2, 1, 2], [1], [], [3, 2], [1, 1, 1, 1]]  # a page of 3 > I, 4 pages > P
    L = 8
    masks, pages = zip(*(layout(r, L) for r in rows))
    mask, pages = torch.stack(masks), torch.stack(pages)
    values = torch.randn(len(rows), L, 2, dtype=torch.float64)
    got, gmask = page_grid(values, mask, pages, P, I)
    want, wmask = grid_loop(values, mask, pages, P, I)
    assert torch.equal(gmask, wmask)
    assert torch.equal(got, want)
    assert wmask[0].tolist() == [[True, True], [True, False], [True, True]]
    assert wmask[3].tolist() == [[False, False], [True, True], [True, True]]  # the page of 3 keeps 2


def racp_loop(enc, x: BehaviourInput) -> torch.Tensor:
    """The module docstring's three stages, one row and one page at a time."""
    B, L = x.mask.shape
    out = []
    for b in range(B):
        grid, gm = grid_loop(enc.item(x.hist[b:b + 1].reshape(1, L, -1)), x.mask[b:b + 1], x.sessions[b:b + 1],
                             enc.pages, enc.page_size)
        q0 = enc.query(x.query[b].reshape(-1))
        q, vs, present = q0, [], []
        for p in range(enc.pages):
            items = [grid[0, p, i] for i in range(enc.page_size) if gm[0, p, i]]
            if not items:
                vs.append(torch.zeros_like(q0))
                present.append(False)
                continue
            c = sum(items) / len(items)
            hs = [enc.context(torch.cat([e, c, e - c])) for e in items]
            scores = [enc.att_out(torch.tanh(enc.att(torch.cat([h, q, h * q])))).squeeze() for h in hs]
            a = torch.softmax(torch.stack(scores), 0)
            v = sum(ai * h for ai, h in zip(a, hs))
            q = enc.gru(v.unsqueeze(0), q.unsqueeze(0)).squeeze(0)
            vs.append(v)
            present.append(True)
        u = torch.zeros_like(q0)
        for v, ok in zip(vs, present):
            if ok:
                u = u + enc.page_unit(torch.cat([v, q0, v - q0, v * q0])).squeeze() * v
        out.append(torch.stack([u, q]))
    return torch.stack(out)


def test_racp_encoder_against_a_float64_loop():
    torch.manual_seed(0)
    enc = build_encoder("racp", {"hidden": 5, "context_hidden": [6], "attention_dim": 4, "page_attention_hidden": [3]},
                        D, SPEC, 2).double()
    rows = [[2, 1, 2], [1], [], [2, 2], [1, 2, 1, 1]]
    masks, pages = zip(*(layout(r, P * I) for r in rows))
    mask, pages = torch.stack(masks), torch.stack(pages)
    hist = torch.randn(len(rows), P * I, F, D, dtype=torch.float64) * mask.view(-1, P * I, 1, 1)
    x = BehaviourInput(hist=hist, mask=mask, query=torch.randn(len(rows), 2, D, dtype=torch.float64),
                       context=torch.randn(len(rows), 2, D, dtype=torch.float64), sessions=torch.where(mask, pages, -1))
    got = enc(x).tokens
    assert got.shape == (len(rows), 2, 5)
    torch.testing.assert_close(got, racp_loop(enc, x), rtol=1e-10, atol=1e-12)
    # an empty history: no page read, the query stays the candidate's
    torch.testing.assert_close(got[2, 1], enc.query(x.query[2].reshape(-1)))


def test_racp_needs_pages_and_a_shared_field():
    with pytest.raises(ValueError, match="no page field"):
        build_encoder("racp", {}, D, BehaviourSpec("hist", F, 6, (0,), (0,)), 2)
    with pytest.raises(ValueError, match="shares no field"):
        build_encoder("racp", {}, D, BehaviourSpec("pages", F, 6, (), (), session=2, max_sessions=3), 2)


@pytest.fixture(scope="module")
def impressions(tmp_path_factory):
    from rankmixer.config import load_config
    from rankmixer.experiment import prepare_data

    root = tmp_path_factory.mktemp("impressions")
    cfg = load_config(None, ["data.dataset=impressions", f"data.prepared_dir={root / 'prep'}",
                             "data.preset_options={rows_train: 1500, rows_valid: 500, rows_test: 500, "
                             "max_pages: 3, page_size: 4, behaviours: pages}"])
    return prepare_data(cfg.data, log=lambda m: None)


@pytest.mark.parametrize("model, options", [
    ("racp", SMALL["racp"]),
    ("rankmixer", {**SMALL["rankmixer"], "sequence_module": "racp",
                   "sequence_options": SMALL["racp"]["racp"]}),
])
def test_racp_trains_on_page_histories(impressions, model, options):
    from rankmixer.data.loader import ParquetBatches

    torch.manual_seed(0)
    net = registry.build_model(model, impressions, options)
    batch = next(iter(ParquetBatches(impressions, "train", 256, shuffle=False)))
    assert batch.behaviours["pages"].shape[1:] == (12, 5)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        out = net(batch)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits.squeeze(-1), batch.labels.squeeze(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert math.isfinite(losses[-1]) and losses[-1] < losses[0] - 0.05
    assert all(p.grad is not None for n, p in net.named_parameters() if "gru" in n)
