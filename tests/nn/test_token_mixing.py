"""Token mixing (``nn/token_mixing.py``): against an explicit-loop reference, a permutation
that is its own inverse, and shape errors caught at build time."""

from __future__ import annotations

import pytest
import torch
from tests.factories import mixing_reference

from rankmixer.nn.token_mixing import TokenMixing, inverse_token_mixing, token_mixing


@pytest.mark.parametrize("T,D", [(2, 4), (4, 8), (3, 12), (8, 64)])
def test_token_mixing_matches_loop_reference_and_is_not_identity(T, D):
    x = torch.randn(3, T, D, generator=torch.Generator().manual_seed(T))
    y = token_mixing(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, mixing_reference(x), rtol=0, atol=0)
    assert not torch.equal(y, x)


@pytest.mark.parametrize("T,D", [(2, 4), (4, 8), (5, 20), (16, 768)])
def test_token_mixing_is_a_permutation_and_its_own_inverse(T, D):
    B = 2
    x = torch.arange(B * T * D, dtype=torch.float64).view(B, T, D)
    y = token_mixing(x)
    # every element exactly once, and only within its own sample
    for b in range(B):
        assert torch.equal(y[b].flatten().sort().values, x[b].flatten())
    assert torch.equal(token_mixing(y), x)
    assert torch.equal(inverse_token_mixing(y), x)
    m = TokenMixing(T, D)
    assert torch.equal(m.inverse(m(x)), x)
    assert not list(m.parameters())


def test_token_mixing_rejects_indivisible_width():
    with pytest.raises(ValueError, match="divisible"):
        token_mixing(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="divisible"):
        TokenMixing(3, 8)


@pytest.mark.parametrize("T,D", [(1, 3), (2, 4), (3, 9), (4, 16), (8, 64)])
def test_revert_of_mix_restores_the_token_layout_exactly(T, D):
    """TokenMixer-Large's revert (here the inverse of H = T mixing) undoes the mix bit for bit."""
    x = torch.randn(5, T, D, generator=torch.Generator().manual_seed(D))
    mixer = TokenMixing(T, D)
    assert torch.equal(inverse_token_mixing(token_mixing(x)), x)
    assert torch.equal(mixer.inverse(mixer(x)), x)


@pytest.mark.parametrize("T,D", [(2, 4), (4, 8), (8, 64)])
def test_rank_of_the_plain_residual_with_token_mixing_is_t_plus_1_d_over_2(T, D):
    """``x -> x + TM(x)`` as a ``TD x TD`` matrix (float64, on the standard basis): TM swaps
    head blocks (t, h) and (h, t) of the T x T grid of D/T-wide blocks, so I + TM is 2 on the
    T(T+1)/2 symmetric block pairs and 0 on the T(T-1)/2 antisymmetric ones: rank
    T(T+1)/2 * D/T = (T+1)D/2 (288 of 512 at T=8, D=64)."""
    basis = torch.eye(T * D, dtype=torch.float64).view(T * D, T, D)
    M = (basis + token_mixing(basis)).reshape(T * D, T * D)
    assert torch.linalg.matrix_rank(M).item() == (T + 1) * D // 2
