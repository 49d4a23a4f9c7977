"""Width slicing in the supernet: the groups by hand, every narrow candidate against its block
written out by hand in float64 on the leading slices of the widest one's weights, gradients of a
narrow path only inside its slice, and the parameters a shared supernet saves."""

from __future__ import annotations

import pytest
import torch

from rankmixer.models import registry
from rankmixer.models.width_slicing import slice_owners
from tests.factories import random_batch

CANDIDATES = [
    {"type": "mlp", "width": 8, "depth": 2}, {"type": "mlp", "width": 3, "depth": 2},  # 0, 1: one group
    {"type": "mlp", "width": 5, "depth": 1},  # 2: another depth, its own weights
    {"type": "cross", "depth": 1, "rank": 4}, {"type": "cross", "depth": 1, "rank": 2},  # 3, 4
    {"type": "gating", "width": 6}, {"type": "gating", "width": 2},  # 5, 6
    {"type": "compress", "width": 5}, {"type": "compress", "width": 2},  # 7, 8
    {"type": "dot"}, {"type": "zero"},  # 9, 10
]


def build(fm, share: bool):
    torch.manual_seed(0)
    cfg = {"embedding_dim": 4, "choice_blocks": 2, "set_size": 3, "candidates": CANDIDATES, "share_widths": share}
    return registry.build_model("supernet", fm, cfg).double().eval()


def test_candidates_group_by_type_and_their_other_sizes():
    assert slice_owners(CANDIDATES) == [0, 0, 2, 3, 3, 5, 5, 7, 7, 9, 10]
    # a full-rank cross block has no rank to slice; attention widths are not sliced
    assert slice_owners([{"type": "cross", "depth": 1, "rank": None}, {"type": "cross", "depth": 1, "rank": 2},
                         {"type": "attention", "width": 8, "heads": 2}, {"type": "attention", "width": 4,
                                                                             "heads": 2}]) == [0, 1, 2, 3]


def by_hand(model, i: int, k: int, values: list[torch.Tensor]) -> torch.Tensor:
    """Narrow candidate k of choice block i, written out on its owner's leading slices."""
    relu = torch.relu
    c = CANDIDATES[k]
    own = slice_owners(CANDIDATES)[k]
    op, proj = model.ops[i][own].op, model.projections[i][own].linear
    x = torch.cat([v.flatten(1) for v in values], dim=1)
    if c["type"] == "mlp":
        w = c["width"]
        l0, l1 = op.layers[0], op.layers[2]
        h = relu(x @ l0.weight[:w].T + l0.bias[:w])
        out = relu(h @ l1.weight[:w, :w].T + l1.bias[:w])
    elif c["type"] == "cross":
        r = c["rank"]
        layer = op.layers[0]
        out = x * ((x @ layer.v.weight[:r].T) @ layer.u.weight[:, :r].T + layer.u.bias) + x
    elif c["type"] == "gating":
        h = c["width"]
        g0, g1 = op.gate.layers[0], op.gate.layers[2]
        out = x * torch.sigmoid(relu(x @ g0.weight[:h].T + g0.bias[:h]) @ g1.weight[:, :h].T + g1.bias)
    else:  # compress: the first output entities of the set [B, N, d]
        n = c["width"]
        entities = torch.cat(values, dim=1)
        out = torch.einsum("on,bnd->bod", op.weight.weight[:n], entities).flatten(1)
    flat = out.flatten(1)
    return (flat @ proj.weight[:, :flat.shape[1]].T + proj.bias).view(x.shape[0], 3, 4)


@pytest.mark.parametrize("k", [1, 4, 6, 8])
def test_a_narrow_candidate_is_its_block_on_the_leading_slices(tiny_feature_map, generator, k):
    model = build(tiny_feature_map, share=True)
    batch = random_batch(tiny_feature_map, 5, generator)
    emb = model.embedding(batch).fields
    earlier = torch.randn(5, 3, 4, dtype=torch.float64, generator=generator)
    for i, values in enumerate(([emb], [emb, earlier])):
        assert torch.allclose(model.candidate(i, k, values), by_hand(model, i, k, values), atol=1e-12)


def test_a_narrow_path_trains_only_its_slice(tiny_feature_map, generator):
    model = build(tiny_feature_map, share=True)
    model.set_path([1, 4])  # the narrow MLP, then the rank-2 cross block
    model(random_batch(tiny_feature_map, 6, generator)).logits.sum().backward()
    first = model.ops[0][0].op.layers[0].weight.grad  # the width-8 MLP's first layer: [8, inputs]
    assert first[:3].abs().sum() > 0 and torch.all(first[3:] == 0)
    u = model.ops[1][3].op.layers[0].u.weight.grad  # the rank-4 cross layer's U: [inputs, 4]
    assert u[:, :2].abs().sum() > 0 and torch.all(u[:, 2:] == 0)
    proj = model.projections[0][0].linear.weight.grad  # P of the MLP group reads the first 3 outputs
    assert proj[:, :3].abs().sum() > 0 and torch.all(proj[:, 3:] == 0)


def test_shared_widths_save_the_narrow_candidates_weights(tiny_feature_map):
    own, shared = build(tiny_feature_map, share=False), build(tiny_feature_map, share=True)
    narrow = sum(p.numel() for i in range(2) for k in (1, 4, 6, 8)
                 for p in (*own.ops[i][k].parameters(), *own.projections[i][k].parameters()))
    total = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert total(shared) == total(own) - narrow
    assert torch.equal(shared.op_flops, own.op_flops)  # each candidate's FLOPs are its own block's


def test_a_space_turns_width_sharing_on(tiny_feature_map):
    from rankmixer.search.space import parse_architecture_space
    from tests.factories import TINY_SEARCH_SPACE

    tree = {**TINY_SEARCH_SPACE, "supernet": {"share_widths": True, "candidates": {"mlp": [{"width": 4}, {"width": 16}]}}}
    section = parse_architecture_space(tree, "space", None).supernet
    assert section["share_widths"] is True
    model = registry.build_model("supernet", tiny_feature_map, {k: v for k, v in section.items() if k != "name"})
    assert model.owners[:2] == [1, 1]  # the width-4 MLP runs on the width-16 one's weights
