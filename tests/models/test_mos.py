"""MoS (nn/sequence/mos.py): the router against a float64 loop over rows and sessions, the
subsequence helpers against loops, the wrapper's transparency (one expert = its backbone), and
training with every routing and ablation on a tiny behaviour set with a session field."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rankmixer import experiment
from rankmixer.config import load_config
from rankmixer.data.loader import ParquetBatches
from rankmixer.models import registry
from rankmixer.nn.sequence import BehaviourInput, BehaviourSpec, behaviour_inputs, build_encoder
from rankmixer.nn.sequence.mos import left_align, recent
from tests.factories import SMALL

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def session_data(tmp_path_factory):
    """The tiny behaviour set of tests/models/conftest.py with sessions cut at 900 s."""
    root = tmp_path_factory.mktemp("sessions")
    opts = {"rows_train": 300, "rows_valid": 100, "rows_test": 100, "n_users": 50, "n_items": 120,
            "n_categories": 8, "seq_len_max": 12, "return_period": 6, "attention_window": 4,
            "session_gap": 900, "max_sessions": 6}
    cfg = load_config(None, ["data.dataset=behaviour", f"data.preset_options={json.dumps(opts)}",
                             f"data.prepared_dir={root / 'prep'}", f"run_dir={root / 'run'}"])
    return experiment.prepare_data(cfg.data, log=lambda m: None)


def batch_of(fm):
    return next(iter(ParquetBatches(fm, "train", batch_size=64)))


def inputs(B=4, L=7, F=3, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 4, 0, 1])[:B]
    mask = torch.arange(L)[None, :] < lengths[:, None]
    hist = torch.randn(B, L, F, d, generator=g) * mask[:, :, None, None]
    sessions = torch.tensor([[3, 3, 2, 1, 1, 0, 0], [1, 1, 0, 0, -1, -1, -1], [-1] * 7, [0] + [-1] * 6])[:B]
    return BehaviourInput(hist=hist, mask=mask, query=torch.randn(B, 1, d, generator=g),
                          context=torch.randn(B, 2, d, generator=g), sessions=sessions)


SPEC = BehaviourSpec(name="h", num_fields=3, max_len=7, keys=(0,), query=(0,), session=2, max_sessions=5)


def test_router_matches_a_float64_loop():
    torch.manual_seed(0)
    enc = build_encoder("mos", {"themes": 3, "temperature": 0.7}, 5, SPEC, 2).double()
    x = inputs()
    x = BehaviourInput(x.hist.double(), x.mask, x.query.double(), x.context.double(), x.sessions)
    onehot, means, present = enc.router.session_means(x)
    assign = enc.router.route(means)
    W, b = enc.router.session_proj.weight.detach().numpy(), enc.router.session_proj.bias.detach().numpy()
    gamma, beta = enc.router.session_norm.weight.detach().numpy(), enc.router.session_norm.bias.detach().numpy()
    P = enc.router.prototypes.detach().numpy()
    for r in range(4):
        for s in range(5):
            pos = [i for i in range(7) if int(x.sessions[r, i]) == s]
            assert onehot[r, :, s].sum().item() == len(pos)
            assert bool(present[r, s]) == bool(pos)
            if not pos:
                continue
            e = np.mean([x.hist[r, i].reshape(-1).numpy() for i in pos], axis=0)
            h = W @ e + b
            h = (h - h.mean()) / math.sqrt(h.var() + 1e-5) * gamma + beta
            scores = P @ h / (math.sqrt(5) * 0.7)
            want = np.exp(scores - scores.max())
            np.testing.assert_allclose(assign[r, s].detach().numpy(), want / want.sum(), rtol=1e-7)


def test_left_align_and_recent_match_loops():
    x = inputs()
    keep = torch.tensor([[1, 0, 1, 0, 1, 1, 0], [0, 1, 0, 1, 0, 0, 0], [0] * 7, [1] + [0] * 6], dtype=torch.bool)
    keep &= x.mask
    h, m = left_align(x.hist, x.mask, keep)
    for r in range(4):
        kept = [i for i in range(7) if keep[r, i]]
        assert m[r].tolist() == [True] * len(kept) + [False] * (7 - len(kept))
        for j, i in enumerate(kept):
            assert torch.equal(h[r, j], x.hist[r, i])
    y = recent(x, 3)
    for r, n in enumerate([7, 4, 0, 1]):
        last = list(range(max(n - 3, 0), n))
        assert y.mask[r].tolist() == [True] * len(last) + [False] * (3 - len(last))
        for j, i in enumerate(last):
            assert torch.equal(y.hist[r, j], x.hist[r, i])
        assert (y.hist[r, len(last):] == 0).all()


def test_one_expert_is_its_backbone():
    """Only the global expert: the gate's softmax over one expert is 1, so MoS is its backbone;
    soft routing with one theme (and no other expert) scales every position by 1: the same."""
    x = inputs()
    torch.manual_seed(0)
    din = build_encoder("din", {}, 5, SPEC, 2)
    for opts, part in (({"theme_experts": False, "short_term": 0}, "global_expert"),
                       ({"themes": 1, "global_expert": False, "short_term": 0, "balance_weight": 0.0}, "theme_expert")):
        mos = build_encoder("mos", opts, 5, SPEC, 2)
        getattr(mos, part).load_state_dict(din.state_dict())
        torch.testing.assert_close(mos(x).tokens, din(x).tokens, rtol=1e-6, atol=1e-6)


def test_hard_routing_filters_sessions():
    """Hard routing: theme k's backbone sees exactly the positions of the sessions routed to k."""
    x = inputs()
    torch.manual_seed(0)
    mos = build_encoder("mos", {"themes": 2, "routing": "hard", "global_expert": False, "short_term": 0}, 5, SPEC, 2)
    seen = []
    mos.theme_expert.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    mos(x)
    theme = mos.router.route(mos.router.session_means(x)[1]).argmax(-1)  # [B, S]
    stacked = seen[0]
    for k in range(2):
        for r in range(4):
            pos = [i for i in range(7) if x.mask[r, i] and int(theme[r, x.sessions[r, i]]) == k]
            got = stacked.mask[k * 4 + r]
            assert int(got.sum()) == len(pos)
            for j, i in enumerate(pos):
                torch.testing.assert_close(stacked.hist[k * 4 + r, j], x.hist[r, i])


@pytest.mark.parametrize("routing", ["soft", "hard"])
def test_session_tokens_are_routed_session_means(routing):
    """theme_tokens: sessions: theme k's backbone sees one token per session (the float64 mean
    of its positions' vectors), oldest session first, scaled by the session's weight for k
    (soft) or only the sessions routed to k (hard)."""
    x = inputs()
    x = BehaviourInput(x.hist.double(), x.mask, x.query.double(), x.context.double(), x.sessions)
    torch.manual_seed(0)
    mos = build_encoder("mos", {"themes": 2, "routing": routing, "theme_tokens": "sessions", "global_expert": False,
                                "short_term": 0}, 5, SPEC, 2).double()
    seen = []
    mos.theme_expert.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    mos(x)
    assign = mos.router.route(mos.router.session_means(x)[1]).detach().numpy()  # [B, S, K]
    stacked = seen[0]
    assert stacked.hist.shape[1] == SPEC.max_sessions
    for k in range(2):
        for r in range(4):
            want = []
            for s in range(SPEC.max_sessions - 1, -1, -1):  # oldest first
                pos = [i for i in range(7) if x.mask[r, i] and int(x.sessions[r, i]) == s]
                if not pos:
                    continue
                mean = np.mean([x.hist[r, i].numpy() for i in pos], axis=0)
                if routing == "soft":
                    want.append(mean * assign[r, s, k])
                elif assign[r, s].argmax() == k:
                    want.append(mean)
            got = stacked.mask[k * 4 + r]
            assert got.tolist() == [True] * len(want) + [False] * (SPEC.max_sessions - len(want))
            for j, w in enumerate(want):
                np.testing.assert_allclose(stacked.hist[k * 4 + r, j].detach().numpy(), w, rtol=1e-10, atol=1e-12)


def test_missing_session_field_is_a_clear_error(behaviour_data):
    with pytest.raises(ValueError, match="has no session field"):
        registry.build_model("mos", behaviour_data, SMALL["mos"])
    # without theme experts it needs none
    registry.build_model("mos", behaviour_data, {**SMALL["mos"], "mos": {"theme_experts": False}})


@pytest.mark.parametrize("opts", [{"routing": "soft"}, {"routing": "hard"}, {"theme_experts": False},
                                  {"short_term": 0}, {"backbone": "dien"}, {"backbone": "pyramid"},
                                  {"theme_tokens": "sessions"}, {"theme_tokens": "sessions", "routing": "hard"},
                                  {"theme_tokens": "sessions", "backbone": "interformer"}])
def test_trains_with_every_routing_and_ablation(session_data, opts):
    fm = session_data
    assert fm.feature("hist").fields[-1].name == "session"
    torch.manual_seed(0)
    mos_cfg = {**SMALL["mos"]["mos"], **opts}
    if opts.get("backbone") not in (None, "din"):
        mos_cfg["backbone_options"] = {}
    model = registry.build_model("mos", fm, {**SMALL["mos"], "mos": mos_cfg})
    batch = batch_of(fm)
    out = model(batch)
    assert torch.isfinite(out.logits).all() and out.logits.shape == (batch.labels.shape[0], 1)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch.labels.float())
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    loss.backward()
    enc = model.encoders["hist"]
    if enc.theme_expert is not None:  # the router learns, through soft weights or straight-through
        assert enc.router.prototypes.grad is not None and enc.router.prototypes.grad.abs().sum() > 0


def test_rankmixer_takes_mos_tokens(session_data):
    """RankMixer's sequence_module: mos (the tokens of the MoS fusion), trained one step."""
    torch.manual_seed(0)
    model = registry.build_model("rankmixer", session_data, {
        **SMALL["rankmixer"], "sequence_module": "mos",
        "sequence_options": {"themes": 2, "short_term": 3, "routing": "hard", "backbone_options": {"attention_hidden": [8]}}})
    batch = batch_of(session_data)
    out = model(batch)
    assert torch.isfinite(out.logits).all()
    out.logits.sum().backward()
    protos = [p for n, p in model.named_parameters() if n.endswith("prototypes")]
    assert protos and protos[0].grad is not None and protos[0].grad.abs().sum() > 0


def mos_interformer(fm, **mos):
    cfg = {**SMALL["interformer"], "mos": {"backbone": "interformer", "themes": 2, "short_term": 3, **mos}}
    return registry.build_model("interformer", fm, cfg).eval()


def test_interformer_with_only_its_global_expert_is_interformer(session_data):
    """MoS(InterFormer) with the global expert alone: the gate's softmax over one expert is 1,
    so the model is plain InterFormer with the same weights."""
    torch.manual_seed(0)
    plain = registry.build_model("interformer", session_data, SMALL["interformer"]).eval()
    mos = mos_interformer(session_data, theme_experts=False, short_term=0)
    missing, unexpected = mos.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("mos_gate") for k in missing)
    batch = batch_of(session_data)
    torch.testing.assert_close(mos(batch).logits, plain(batch).logits, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("routing", ["soft", "hard"])
@pytest.mark.parametrize("expert", [0, 1, 2, 3])
def test_interformer_gate_on_one_expert_is_interformer_on_its_stream(session_data, routing, expert):
    """With the gate forced onto one expert (global, short-term, theme 1 or theme 2), the MoS
    model is a plain InterFormer whose sequence side is that expert's own (its CLS, sequence arches
    and summaries, the rest shared) reading that expert's input: the whole history, the last 3
    behaviours (``recent``), or theme k's rows of the router's stacked subsequences."""
    torch.manual_seed(0)
    mos = mos_interformer(session_data, routing=routing, theme_tokens="sessions").double()
    with torch.no_grad():
        mos.mos_gate.weight.zero_()
        mos.mos_gate.bias.copy_(torch.where(torch.arange(4) == expert, 50.0, -50.0))
    plain = registry.build_model("interformer", session_data, SMALL["interformer"]).double().eval()
    side = {0: "", 1: "experts.short.", 2: "experts.themes.", 3: "experts.themes."}[expert]
    own = ("cls", "sequence.", "s_summaries.")
    state = {k: v for k, v in mos.state_dict().items() if not k.startswith(("experts.", "routers.", "mos_gate"))}
    state.update({k[len(side):]: v for k, v in mos.state_dict().items() if side and k.startswith(side)
                  and k[len(side):].startswith(own)})
    plain.load_state_dict(state)
    batch = batch_of(session_data)
    B = batch.labels.shape[0]
    x = plain.embedding(batch).fields
    inp = behaviour_inputs(plain.embedding.behaviours(batch), x, plain.specs, batch.behaviours)["hist"]
    if expert == 1:
        inp = recent(inp, 3)
    elif expert >= 2:
        themes, _ = mos.routers["hist"].themes(inp)
        k = expert - 2
        inp = BehaviourInput(themes.hist[k * B:(k + 1) * B], themes.mask[k * B:(k + 1) * B], inp.query, inp.context)
    plain.streams = lambda batch, fields: ([(plain, *plain.merged({"hist": inp}))], None)
    torch.testing.assert_close(mos(batch).logits, plain(batch).logits, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("opts", [{"routing": "soft"}, {"routing": "hard", "theme_tokens": "sessions"},
                                  {"short_term": 0}, {"theme_experts": False}])
def test_interformer_with_mos_trains(session_data, opts):
    torch.manual_seed(0)
    model = mos_interformer(session_data, **opts).train()
    batch = batch_of(session_data)
    out = model(batch)
    assert torch.isfinite(out.logits).all() and out.logits.shape == (batch.labels.shape[0], 1)
    assert (out.aux_loss is not None) == opts.get("theme_experts", True)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, batch.labels.float())
    (loss + (out.aux_loss if out.aux_loss is not None else 0)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} gets no gradient"


@pytest.mark.parametrize("mos, key", [({"backbone": "din"}, "mos.backbone"),
                                      ({"backbone": "interformer", "backbone_options": {"seq_dim": 8}}, "mos.backbone"),
                                      ({"backbone": "interformer", "global_expert": False}, "mos.global_expert")])
def test_interformer_refuses_a_mos_it_cannot_wrap(session_data, mos, key):
    with pytest.raises(ValueError, match=key):
        registry.build_model("interformer", session_data, {**SMALL["interformer"], "mos": mos})
