import numpy as np
import pytest
import torch

from ecqx import codebook, make_grid
from tests.literal import as_np, literal_codebook


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("seed", range(4))
def test_codebook_matches_literal(bits, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(400, generator=g, dtype=torch.float64) * 0.1 + (seed - 1.5) * 0.01
    got = codebook(w, bits).double()
    want = literal_codebook(as_np(w), bits)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bits", range(2, 9))
def test_codebook_invariants(bits):
    w = torch.randn(1000) * 0.05
    c = codebook(w, bits)
    assert c.numel() == 2**bits
    assert (c == 0).sum() == 1
    assert torch.all(c[1:] > c[:-1])
    grid = make_grid(w, bits)
    ints = c / grid.step
    assert torch.allclose(ints, ints.round(), atol=1e-4), "levels are integer multiples of the step"


def test_extra_level_goes_to_favoured_side():
    w = torch.cat([torch.rand(900) * 0.5, -torch.rand(100) * 0.1])
    c = codebook(w, 3)
    assert c.max() > -c.min(), "positive-heavy weights get the extra positive level"
    c_neg = codebook(-w, 3)
    assert -c_neg.min() > c_neg.max()


def test_unsigned_grid_for_nonnegative_layer():
    w = torch.rand(500)
    c = codebook(w, 4)
    assert c.min() == 0 and c.numel() == 16
    step = np.percentile(w.numpy(), 99.9) / 15
    assert c[1].item() == pytest.approx(step, rel=1e-5)


@pytest.mark.parametrize("bits", [1, 9, 4.0, "4"])
def test_invalid_bits_are_rejected(bits):
    with pytest.raises(ValueError, match="bits must be an integer in 2..8"):
        codebook(torch.randn(10), bits)


def test_all_zero_layer_has_a_valid_grid():
    c = codebook(torch.zeros(10), 3)
    assert (c == 0).sum() == 1 and torch.isfinite(c).all()
