"""The searched model: spec validation naming the block and key, how inputs combine (against
hand computations), the outputs feeding the heads, and FLOPs by the one counter against a hand
count. Every block type also runs through the conformance suite (tests.factories.SMALL)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from tests.factories import make_feature_map, random_batch

from rankmixer.models import registry
from rankmixer.models.flops import forward_flops_per_sample
from rankmixer.models.searched import describe_blocks


def build(blocks, fm=None, **extra):
    torch.manual_seed(0)
    fm = fm or make_feature_map(num_tasks=1, bags=False, sequences=False)
    return registry.build_model("searched", fm, {"embedding_dim": 4, "blocks": blocks, **extra}), fm


@pytest.mark.parametrize("blocks, message", [
    ([{"name": "a", "type": "mlp", "inputs": ["b"], "width": 4}, {"name": "b", "type": "mlp", "width": 4}],
     "block 'a' reads 'b', which is not an earlier block"),
    ([{"name": "a", "type": "mlp", "inputs": ["a"], "width": 4}], "block 'a' reads 'a'"),
    ([{"name": "a", "type": "mlp", "inputs": ["zz"], "width": 4}], "no such block"),
    ([{"name": "a", "type": "fm"}, {"name": "a", "type": "dot"}], "used twice"),
    ([{"name": "a", "type": "dot", "width": 4}], "a dot block takes no width"),
    ([{"name": "a", "type": "cross", "heads": 2}], "a cross block takes no heads"),
    ([{"name": "a", "type": "mlp"}], "a mlp block needs width"),
    ([{"name": "a", "type": "attention", "width": 6, "heads": 4}], "not divisible by heads"),
    ([{"name": "a", "type": "rankmixer", "width": 6, "tokens": 4}], "not divisible by tokens"),
    ([{"name": "emb", "type": "fm"}], "not 'emb'"),
    ([{"name": "a", "type": "conv"}], "type"),
    ([{"name": "a", "type": "mlp", "width": 0}], "width"),
    ([], "blocks"),
])
def test_a_bad_spec_names_the_block_and_key(blocks, message):
    with pytest.raises((ValidationError, ValueError), match=message):
        registry.parse_config("searched", {"blocks": blocks})


def test_an_architecture_with_an_empty_output_is_refused():
    """A dot block over one entity (here the FM block's vector) has no pairs: its output would be
    empty and the task head a Linear(0, n) whose bias initialises to NaN. Building it fails,
    naming the block; over two entities it builds."""
    with pytest.raises(ValueError, match="block 'd': a dot block over its inputs \\(f\\) gives an empty output"):
        build([{"name": "f", "type": "fm"}, {"name": "d", "type": "dot", "inputs": ["f"]}])
    model, _ = build([{"name": "f", "type": "fm"}, {"name": "g", "type": "fm"}, {"name": "d", "type": "dot", "inputs": ["f", "g"]}])
    assert model.blocks[-1].out_shape == (1,)


def test_a_vector_block_reads_every_input_flattened():
    model, fm = build([{"name": "f", "type": "fm"}, {"name": "m", "type": "mlp", "inputs": ["emb", "f"], "width": 5}])
    fields = len(model.embedding.field_names)
    assert model.blocks[1].op.layers[0].in_features == fields * 4 + 4
    assert model.outputs == ["m"] and model.heads  # f is read by m: only m feeds the heads


def test_fm_and_dot_blocks_against_hand_computations():
    model, fm = build([{"name": "f", "type": "fm"}, {"name": "d", "type": "dot"}])
    batch = random_batch(fm, 3)
    e = model.embedding(batch).fields.detach()  # [B, F, 4]
    B, F, _ = e.shape
    fm_hand = torch.stack([sum(e[b, i] * e[b, j] for i in range(F) for j in range(i + 1, F)) for b in range(B)])
    dot_hand = torch.stack([torch.stack([e[b, i] @ e[b, j] for i in range(F) for j in range(i + 1, F)])
                            for b in range(B)])
    got = {}
    for spec, block in zip(model.cfg.blocks, model.blocks):
        got[spec.name] = block([e])
    torch.testing.assert_close(got["f"], fm_hand)
    torch.testing.assert_close(got["d"], dot_hand)
    assert model.outputs == ["f", "d"] and model.heads.linear.in_features == 4 + F * (F - 1) // 2


def test_a_set_block_brings_inputs_to_the_first_set_width():
    model, fm = build([{"name": "a", "type": "attention", "width": 6, "heads": 3},
                       {"name": "m", "type": "mlp", "width": 5},
                       {"name": "c", "type": "compress", "inputs": ["emb", "a", "m"], "width": 2}])
    fields = len(model.embedding.field_names)
    block = model.blocks[2]
    assert [type(a).__name__ for a in block.adapters] == ["Identity", "Linear", "Linear"]
    assert block.adapters[1].in_features == 6 and block.adapters[2].in_features == 5
    assert block.op.weight.in_features == fields + fields + 1  # emb's and a's entities, m as one
    out = model(random_batch(fm, 2))
    assert out.logits.shape == (2, 1)


def test_flops_of_an_mlp_architecture_by_hand():
    model, fm = build([{"name": "m", "type": "mlp", "width": 8, "depth": 2}])
    fields = len(model.embedding.field_names)
    batch = random_batch(fm, 16)
    hand = 2 * (fields * 4 * 8 + 8 * 8 + 8 * 1)  # two ReLU layers, then the one-task head
    assert forward_flops_per_sample(model, batch) == hand


def test_describe_blocks():
    text = describe_blocks([{"name": "c", "type": "cross", "depth": 2},
                            {"name": "m", "type": "mlp", "inputs": ["emb", "c"], "width": 64}])
    assert text == "c=cross(depth=2)<-emb; m=mlp(width=64,depth=1)<-emb+c"
