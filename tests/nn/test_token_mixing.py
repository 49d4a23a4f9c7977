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
