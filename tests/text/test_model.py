"""The GTS network: the k-round inference against a slow per-cell loop and against the
unfactored per-round equations (pair features materialised), k = 0 as the plain classifier,
shapes, and encoders whose output does not depend on batch padding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rankmixer.text.config import ModelSection
from rankmixer.text.encoders import BiLSTMEncoder, CNNEncoder
from rankmixer.text.inference import GridClassifier, upper_mask, word_summary
from rankmixer.text.model import GTSModel


def pair_features(h):
    """[B, n, d] -> [B, n, n, 2d]: cell (i, j) is [h_i; h_j]."""
    n = h.shape[1]
    return torch.cat([h[:, :, None, :].expand(-1, -1, n, -1), h[:, None, :, :].expand(-1, n, -1, -1)], dim=-1)


def unfactored(net, h, mask):
    """The paper's equations round by round on the materialised feature grid [B, n, n, 2d]."""
    cells = upper_mask(mask)
    n = h.shape[1]
    z = pair_features(h)
    logits = net.classifier(z)
    out = [logits]
    for _ in range(net.rounds):
        s = torch.softmax(logits, -1) if net.feedback == "probs" else logits
        p = word_summary(s, cells)
        z = net.update(torch.cat([z, p[:, :, None, :].expand(-1, -1, n, -1), p[:, None, :, :].expand(-1, n, -1, -1), s], -1))
        logits = net.classifier(z)
        out.append(logits)
    return out


def inputs(lengths=(5, 3), d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = max(lengths)
    h = torch.randn(len(lengths), n, d, generator=g, dtype=torch.float64)
    mask = (torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]).double()
    return h, mask


def test_rounds_give_one_grid_each():
    h, mask = inputs()
    out = GridClassifier(12, 6, rounds=2).double()(h, mask)
    assert len(out) == 3 and all(o.shape == (2, 5, 5, 6) for o in out)


def test_k0_is_the_plain_classifier():
    h, mask = inputs()
    torch.manual_seed(0)
    k2 = GridClassifier(12, 6, rounds=2).double()
    k0 = GridClassifier(12, 6, rounds=0).double()
    k0.classifier.load_state_dict(k2.classifier.state_dict())
    (plain,) = k0(h, mask)
    w, bias = k2.classifier.weight, k2.classifier.bias
    by_hand = torch.stack([torch.stack([torch.stack([F.linear(torch.cat([h[b, i], h[b, j]]), w, bias)
                                                     for j in range(5)]) for i in range(5)]) for b in range(2)])
    torch.testing.assert_close(plain, by_hand)
    torch.testing.assert_close(k2(h, mask)[0], plain)
    assert k0.update is None


@pytest.mark.parametrize("feedback", ["probs", "logits"])
def test_one_feedback_round_against_a_per_cell_loop(feedback):
    h, mask = inputs()
    torch.manual_seed(1)
    net = GridClassifier(12, 4, rounds=1, feedback=feedback).double()
    z = pair_features(h)
    out = net(h, mask)
    p0 = out[0].softmax(-1) if feedback == "probs" else out[0]
    lengths = mask.sum(1).long().tolist()
    for b, m in enumerate(lengths):
        n = h.shape[1]
        # per word: max over the cells (i, j) and (j, i) of the upper triangle among real words
        summary = []
        for w in range(n):
            cells = [p0[b, i, j] for i in range(n) for j in range(i, n) if i < m and j < m and w in (i, j)]
            vals = torch.stack(cells) if cells else torch.zeros(1, 4, dtype=torch.float64)
            summary.append(torch.maximum(vals.max(0).values, torch.zeros(4, dtype=torch.float64)))
        for i in range(m):
            for j in range(i, m):
                q = torch.cat([z[b, i, j], summary[i], summary[j], p0[b, i, j]])
                want = net.classifier(net.update(q))
                torch.testing.assert_close(out[1][b, i, j], want)


@pytest.mark.parametrize("feedback", ["probs", "logits"])
def test_three_rounds_equal_the_unfactored_equations(feedback):
    h, mask = inputs(lengths=(6, 2, 4), d=5, seed=3)
    torch.manual_seed(2)
    net = GridClassifier(10, 6, rounds=3, feedback=feedback).double()
    factored, reference = net(h, mask), unfactored(net, h, mask)
    assert len(factored) == 4
    for a, b in zip(factored, reference):
        torch.testing.assert_close(a, b)
    # and the gradients of every parameter and of the words agree
    h.requires_grad_(True)
    g1 = torch.autograd.grad(net(h, mask)[-1].square().sum(), [h, *net.parameters()])
    g2 = torch.autograd.grad(unfactored(net, h, mask)[-1].square().sum(), [h, *net.parameters()])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_a_pair_width_that_does_not_match_is_an_error():
    h, mask = inputs(d=6)
    with pytest.raises(ValueError, match="width 6"):
        GridClassifier(10, 6, rounds=1).double()(h, mask)


def test_word_summary_excludes_padding_and_lower_triangle():
    scores = torch.full((1, 3, 3, 1), 5.0)
    scores[0, 1, 0, 0] = 9.0     # lower triangle: ignored
    scores[0, 2, 2, 0] = 7.0     # padding word 2: ignored
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    torch.testing.assert_close(word_summary(scores, upper_mask(mask))[0, :, 0], torch.tensor([5.0, 5.0, 0.0]))


@pytest.mark.parametrize("encoder", [BiLSTMEncoder(6, 4), CNNEncoder(6, 8, dropout=0.0)], ids=["bilstm", "cnn"])
def test_encoder_output_does_not_depend_on_batch_padding(encoder):
    encoder = encoder.double().eval()
    x, mask = inputs(lengths=(3, 7))
    x = x * mask[..., None]
    lengths = mask.sum(1).long()
    together = encoder(x, lengths, mask)
    alone = encoder(x[:1, :3], lengths[:1], mask[:1, :3])
    assert together.shape == (2, 7, encoder.out_dim)
    torch.testing.assert_close(together[0, :3], alone[0])
    assert together[0, 3:].abs().max() == 0  # padded words carry nothing


@pytest.mark.parametrize("name", ["bilstm", "cnn"])
def test_model_shapes(name):
    cfg = ModelSection(encoder=name, embedding_dim=8, lstm_dim=4, cnn_dim=8, rounds=2)
    model = GTSModel(20, cfg)
    tokens = torch.tensor([[2, 3, 4, 5], [6, 7, 0, 0]])
    lengths = torch.tensor([4, 2])
    out = model(tokens, lengths, (tokens > 0).float())
    assert len(out) == 3 and out[-1].shape == (2, 4, 4, 6)
    pair = GTSModel(20, cfg.model_copy(update={"task": "pair", "rounds": 0}))
    assert pair(tokens, lengths, (tokens > 0).float())[-1].shape == (2, 4, 4, 4)


@pytest.mark.parametrize("name", ["bilstm", "cnn"])
def test_a_sentence_predicts_the_same_in_any_batch(name):
    """Whole model (encoder, attention, k-round feedback): padding changes nothing."""
    torch.manual_seed(0)
    model = GTSModel(30, ModelSection(encoder=name, embedding_dim=8, lstm_dim=4, cnn_dim=8, rounds=2)).double().eval()
    tokens = torch.tensor([[2, 3, 4, 0, 0, 0], [5, 6, 7, 8, 9, 10]])
    lengths = torch.tensor([3, 6])
    together = model(tokens, lengths, (tokens > 0).double())[-1]
    alone = model(tokens[:1, :3], lengths[:1], torch.ones(1, 3, dtype=torch.float64))[-1]
    torch.testing.assert_close(together[0, :3, :3], alone[0])
