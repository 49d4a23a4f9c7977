"""CETNet (models/cetnet.py): the fusion against float64 numpy, the collaborative loss against a
hand computation, the members' own tables, one member = that member, the temperature's gradient
against a finite difference, and configuration errors that name their key. The registry-wide
checks run in test_conformance.py (SMALL["cetnet"]); export and serving in tests/serve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rankmixer.models import registry
from rankmixer.models.cetnet import mixture_logit
from rankmixer.nn.embedding import FeatureEmbedding, split_parameters
from tests.factories import SMALL, make_feature_map, random_batch, small_model

pytestmark = pytest.mark.usefixtures("single_thread")


def np_sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def np_entropy(p):
    return -(p * np.log(p) + (1 - p) * np.log(1 - p))


def np_softmax(x, axis=0):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def member_logits(model, batch) -> np.ndarray:
    """[K, B, T] logits of each member, run alone, in float64."""
    with torch.no_grad():
        return np.stack([m(batch).logits.double().numpy() for m in model.members])


@pytest.fixture
def fm():
    return make_feature_map(num_tasks=2)


@pytest.mark.parametrize("tau", [0.05, 1.0])
def test_confidence_fusion_matches_float64_softmax_of_negative_entropy(fm, generator, tau):
    model = small_model("cetnet", fm, tau=tau).eval()
    batch = random_batch(fm, 32, generator)
    with torch.no_grad():
        model.log_tau.add_(0.3)  # a learned tau that has moved from its initial value
        for p in model.members.parameters():  # spread the members' predictions (near 0.5 at init)
            p.mul_(2.0)
    z = member_logits(model, batch)
    p = np_sigmoid(z)
    w = np_softmax(-np_entropy(p) / (tau * np.exp(0.3)), axis=0)  # per sample and task, over members
    fused_p = (w * p).sum(axis=0)
    with torch.no_grad():
        got = model(batch).logits.double().numpy()
        log_w = model.fusion_log_weights(torch.from_numpy(z).float()).double().numpy()
    np.testing.assert_allclose(np.exp(log_w), w, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, np.log(fused_p / (1 - fused_p)), rtol=0, atol=1e-4)
    if tau < 1:  # the weights really vary per sample (constant weights would pass a mean test too)
        assert w.std(axis=(1, 2)).max() > 1e-2


def test_mean_and_learned_fusion(fm, generator):
    batch = random_batch(fm, 16, generator)
    mean = small_model("cetnet", fm, fusion="mean").eval()
    p = np_sigmoid(member_logits(mean, batch)).mean(axis=0)
    with torch.no_grad():
        np.testing.assert_allclose(mean(batch).logits.double().numpy(), np.log(p / (1 - p)), atol=1e-5)
    learned = small_model("cetnet", fm, fusion="learned").eval()
    with torch.no_grad():
        learned.fusion_logits.copy_(torch.tensor([1.0, -0.5, 0.2]))
    w = np_softmax(np.array([1.0, -0.5, 0.2]))[:, None, None]
    p = (w * np_sigmoid(member_logits(learned, batch))).sum(axis=0)
    with torch.no_grad():
        np.testing.assert_allclose(learned(batch).logits.double().numpy(), np.log(p / (1 - p)), atol=1e-5)


def test_mixture_logit_gradient_is_the_mixtures_and_survives_saturation():
    """d BCE(logit(sum w p), y) / d z_k = (p - y) / (p (1 - p)) * w_k p_k (1 - p_k), float64, with
    one member saturated (z = 40: sigmoid is 1 in float32) and no NaN."""
    z = torch.tensor([[[2.0]], [[-1.0]], [[40.0]]], dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).view(3, 1, 1)
    y = torch.tensor([[0.0]], dtype=torch.float64)
    F.binary_cross_entropy_with_logits(mixture_logit(z, w.log()), y).backward()
    pk = torch.sigmoid(z.detach())
    p = (w * pk).sum(0)
    expected = (p - y) / (p * (1 - p)) * w * pk * (1 - pk)
    torch.testing.assert_close(z.grad, expected, rtol=1e-9, atol=1e-12)
    zf = torch.tensor([[[40.0]], [[60.0]]], requires_grad=True)  # float32, both saturated
    out = mixture_logit(zf, torch.full((2, 1, 1), 0.5).log())
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(zf.grad).all()


def test_members_have_disjoint_embedding_tables(fm):
    model = small_model("cetnet", fm)
    tables = [m for m in model.modules() if isinstance(m, FeatureEmbedding)]
    assert len(tables) == 3 and all(any(t is e for e in member.modules()) for t, member in zip(tables, model.members))
    ids = [{id(p) for p in split_parameters(member)[0]} for member in model.members]
    assert all(ids) and sum(len(s) for s in ids) == len(set().union(*ids))
    # the ensemble's parameters are its members' plus log tau, nothing shared
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for m in model.members for p in m.parameters()) + 1


def test_one_member_is_that_member(fm, generator):
    dcn = small_model("dcnv2", fm).eval()
    one = small_model("cetnet", fm, members=[{"name": "dcnv2", "params": SMALL["dcnv2"]}], fusion="mean",
                      collab_weight=0.0)
    one.members[0].load_state_dict(dcn.state_dict())
    batch = random_batch(fm, 16, generator)
    with torch.no_grad():
        torch.testing.assert_close(one.eval()(batch).logits, dcn(batch).logits, rtol=0, atol=1e-5)
        out = one.train()(batch)
        # training: aux_loss is the member's own BCE (weight 1), nothing else
        torch.testing.assert_close(out.aux_loss, F.binary_cross_entropy_with_logits(dcn(batch).logits, batch.labels))


@pytest.mark.parametrize("target", ["peers", "fused"])
def test_collaborative_loss_and_aux_loss_by_hand(fm, generator, target):
    """Members at SMALL sizes have no dropout, so train mode is deterministic: the aux loss is
    member_loss_weight * mean_k BCE_k + collab_weight * mean_k KL(q_k || p_k), q_k the peers'
    mean probability (or the fused one)."""
    model = small_model("cetnet", fm, collab_weight=0.7, member_loss_weight=0.4, collab_target=target).train()
    batch = random_batch(fm, 32, generator)
    z = member_logits(model, batch)
    y = batch.labels.double().numpy()
    p = np_sigmoid(z)
    if target == "peers":
        q = np.stack([np.delete(p, k, axis=0).mean(axis=0) for k in range(3)])
    else:
        w = np_softmax(-np_entropy(p) / 0.1, axis=0)
        q = np.broadcast_to((w * p).sum(axis=0), p.shape)
    kl = (q * np.log(q / p) + (1 - q) * np.log((1 - q) / (1 - p))).mean(axis=(1, 2))
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=(1, 2))
    with torch.no_grad():
        out = model(batch)
    assert out.metrics["cetnet/collab"] == pytest.approx(kl.mean(), abs=1e-5)
    assert float(out.aux_loss) == pytest.approx(0.4 * bce.mean() + 0.7 * kl.mean(), abs=1e-5)
    assert out.metrics["cetnet/m0_dcnv2/bce"] == pytest.approx(bce[0], abs=1e-5)
    assert sum(out.metrics[f"cetnet/{lab}/weight"] for lab in model.member_labels) == pytest.approx(1.0, abs=1e-5)


def test_tau_gradient_matches_a_finite_difference(fm, generator):
    model = small_model("cetnet", fm).double().eval()
    batch = random_batch(fm, 32, generator)
    batch.dense = batch.dense.double()

    def loss():
        return F.binary_cross_entropy_with_logits(model(batch).logits, batch.labels.double())

    loss().backward()
    g = model.log_tau.grad.item()
    eps = 1e-5
    with torch.no_grad():
        model.log_tau.add_(eps)
        up = loss().item()
        model.log_tau.sub_(2 * eps)
        down = loss().item()
    assert g != 0 and g == pytest.approx((up - down) / (2 * eps), rel=1e-4)


def test_fixed_tau_and_independent_members(fm, generator):
    fixed = small_model("cetnet", fm, tau_learned=False)
    assert "log_tau" not in dict(fixed.named_parameters()) and "log_tau" in dict(fixed.named_buffers())
    # joint off: the fused BCE reaches tau only; the members learn from their own losses
    indep = small_model("cetnet", fm, joint=False).train()
    batch = random_batch(fm, 16, generator)
    F.binary_cross_entropy_with_logits(indep(batch).logits, batch.labels).backward()
    assert indep.log_tau.grad is not None and indep.log_tau.grad != 0
    assert all(p.grad is None for p in indep.members.parameters())


@pytest.mark.parametrize("params, key", [
    ({"members": [{"name": "dcnv2"}, {"name": "dcnv3"}]}, r"members\[1\]\.name: .*unknown model 'dcnv3'"),
    ({"members": [{"name": "dcnv2", "params": {"dnn_hiden": [8]}}, {"name": "lr"}]}, r"members\[0\]\.params: .*dnn_hiden"),
    ({"members": [{"name": "dcnv2"}], "collab_weight": 0.0}, r"members: fusion 'confidence' weighs several members"),
    ({"members": [{"name": "dcnv2"}], "fusion": "mean"}, r"collab_weight: .*at least 2 members"),
    ({"members": [{"name": "dcnv2"}, {"name": "cetnet"}]}, r"members\[1\]\.name: a cetnet model cannot hold another cetnet"),
    ({"tau": 0.0}, r"tau: Input should be greater than 0"),
    ({"tau": -1.0}, r"tau: Input should be greater than 0"),
    ({"members": []}, r"members: List should have at least 1 item"),
    ({"members": [{"nme": "dcnv2"}]}, r"members\.0\.nme"),
])
def test_bad_configs_name_the_key(params, key):
    with pytest.raises(ValueError, match=key):
        registry.parse_config("cetnet", params)


def test_member_embedding_width_defaults_to_the_ensembles(fm):
    model = registry.build_model("cetnet", fm, {"embedding_dim": 12, "members": [
        {"name": "dcnv2", "params": {"dnn_hidden": [8]}}, {"name": "lr"},
        {"name": "finalmlp", "params": {"embedding_dim": 4, "mlp1_hidden": [8], "mlp2_hidden": [8]}}]})
    assert [m.cfg.embedding_dim for m in (model.members[0], model.members[2])] == [12, 4]
