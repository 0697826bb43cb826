import math

import numpy as np
import pytest
import torch

from ecqx import assign, assign_layer, codebook
from ecqx.assignment import nearest_indices
from ecqx.entropy import information_content, lambda_max, probabilities
from tests.literal import as_np, literal_ecq, literal_ecqx, literal_lambda_max, literal_pmf


def layer(seed: int, n: int = 3000, shape=None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g, dtype=torch.float64) * 0.05
    w[: n // 50] *= 6  # heavy tails, like trained layers
    return w.reshape(shape) if shape else w


def relevance_like(w: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 100)
    r = (w.abs() * torch.rand(w.shape, generator=g, dtype=torch.float64)) ** 0.5
    return r / r.max()


@pytest.mark.parametrize("bits", range(2, 9))
def test_nearest_neighbour_equals_argmin(bits):
    w = layer(bits, 5000)
    c = codebook(w, bits).double()
    want = torch.argmin((c[:, None] - w[None]) ** 2, dim=0)
    assert torch.equal(nearest_indices(w, c), want)
    # exact midpoints and grid points tie-break like argmin (lower index)
    mids = torch.cat([(c[1:] + c[:-1]) / 2, c, c[:1] - 1, c[-1:] + 1])
    want = torch.argmin((c[:, None] - mids[None]) ** 2, dim=0)
    assert torch.equal(nearest_indices(mids, c), want)


@pytest.mark.parametrize("seed", range(5))
def test_probabilities_and_information(seed):
    w = layer(seed)
    c = codebook(w, 4).double()
    z = int((c == 0).nonzero())
    pmf = probabilities(nearest_indices(w, c), c.numel(), z)
    np.testing.assert_allclose(pmf.numpy(), literal_pmf(as_np(w), as_np(c)), rtol=1e-12)
    assert pmf[z] >= 0.5 and pmf.sum().item() == pytest.approx(1.0)
    info = information_content(pmf)
    assert torch.all(info[pmf > 0] >= info[z]), "zero is always cheapest in information"


@pytest.mark.parametrize("rule", ["thesis", "reference"])
@pytest.mark.parametrize("seed", range(5))
def test_lambda_max_matches_literal(rule, seed):
    w = layer(seed) + (seed - 2) * 0.01
    c = codebook(w, 3).double()
    z = int((c == 0).nonzero())
    info = information_content(probabilities(nearest_indices(w, c), c.numel(), z))
    got = lambda_max(w, c, info, z, rule)
    assert got == pytest.approx(literal_lambda_max(as_np(w), as_np(c), rule), rel=1e-12)
    assert got > 0


def test_thesis_lambda_max_is_where_the_extreme_weight_ties_with_zero():
    w = layer(3)
    c = codebook(w, 4).double()
    z = int((c == 0).nonzero())
    info = information_content(probabilities(nearest_indices(w, c), c.numel(), z))
    lam = lambda_max(w, c, info, z, "thesis")
    gaps = []
    for w_ext in (w.min(), w.max()):
        k = int(nearest_indices(w_ext.reshape(1), c))
        gaps.append(abs((w_ext**2 + lam * info[z]) - ((w_ext - c[k]) ** 2 + lam * info[k])).item())
    assert min(gaps) < 1e-12, "at λ_max the smaller side's extreme weight costs the same in zero"


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("Lambda", [0.0, 0.05, 0.3, 1.0, 3.0])
@pytest.mark.parametrize("rule", ["thesis", "reference"])
def test_ecq_matches_literal(bits, Lambda, rule):
    w = layer(bits * 7 + int(Lambda * 10), shape=(30, 100))
    c = codebook(w, bits).double()
    share = 0.4
    got = assign(w, c, Lambda, share, lambda_max_rule=rule)
    want = literal_ecq(as_np(w), as_np(c), Lambda, share, rule)
    assert got.shape == w.shape
    np.testing.assert_array_equal(got.reshape(-1).numpy(), want)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("Lambda", [0.05, 0.3, 1.0])
@pytest.mark.parametrize("p", [0.02, 0.1, 0.3])
def test_ecqx_matches_literal_and_stays_in_band(bits, Lambda, p):
    w = layer(bits * 13 + int(Lambda * 10))
    c = codebook(w, bits).double()
    r = relevance_like(w, bits)
    a = assign_layer(w, c, Lambda, 0.7, relevance=r, p=p)
    want = literal_ecqx(as_np(w), as_np(c), Lambda, 0.7, as_np(r), a.beta)
    np.testing.assert_array_equal(a.indices.numpy(), want)
    z = int((c == 0).nonzero())
    sparsity = (a.indices == z).double().mean().item()
    lo = max(0.0, a.ecq_sparsity - p)
    assert lo - 1e-9 <= sparsity <= a.ecq_sparsity + 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_relevance_only_moves_weights_between_zero_and_nonzero(seed):
    w = layer(seed)
    c = codebook(w, 4).double()
    z = int((c == 0).nonzero())
    ecq = assign(w, c, 0.3, 1.0)
    ecqx = assign(w, c, 0.3, 1.0, relevance=relevance_like(w, seed))
    both_nonzero = (ecq != z) & (ecqx != z)
    assert torch.equal(ecq[both_nonzero], ecqx[both_nonzero])


@pytest.mark.parametrize("bits", range(2, 9))
def test_lambda_zero_is_nearest_rounding(bits):
    w = layer(bits)
    c = codebook(w, bits).double()
    assert torch.equal(assign(w, c, 0.0, 1.0), torch.argmin((c[:, None] - w[None]) ** 2, dim=0))


@pytest.mark.parametrize("bits", [2, 4, 6])
@pytest.mark.parametrize("relevant", [False, True])
def test_at_most_2_pow_b_values_and_zero_is_a_level(bits, relevant):
    w = layer(bits)
    c = codebook(w, bits).double()
    r = relevance_like(w, 1) if relevant else None
    q = c[assign(w, c, 0.5, 1.0, relevance=r)]
    assert torch.unique(q).numel() <= 2**bits
    assert (q == 0).any()


@pytest.mark.parametrize("rule", ["thesis", "reference"])
def test_larger_lambda_never_lowers_sparsity(rule):
    w = layer(11)
    c = codebook(w, 4).double()
    z = int((c == 0).nonzero())
    grid = [0.0, 0.01, 0.05, 0.1, 0.2, 0.4, 0.7, 1.0, 1.5, 3.0]
    sparsity = [(assign(w, c, L, 1.0, lambda_max_rule=rule) == z).double().mean().item() for L in grid]
    assert all(b >= a for a, b in zip(sparsity, sparsity[1:])), sparsity
    assert sparsity[-1] > 0.9 if rule == "thesis" else True


def test_float32_path_agrees_with_float64_on_most_weights():
    w = layer(5)
    c = codebook(w, 4)
    a64 = assign(w, c.double(), 0.3, 1.0)
    a32 = assign(w.float(), c, 0.3, 1.0)
    assert (a64 == a32).double().mean() > 0.999


def test_empty_cluster_is_never_chosen():
    w = torch.tensor([-0.3, -0.31, 0.0, 0.01, 0.02, 0.5], dtype=torch.float64)
    c = torch.tensor([-0.3, -0.15, 0.0, 0.15, 0.3, 0.45], dtype=torch.float64)
    out = assign(w, c, 0.5, 1.0)
    nn = nearest_indices(w, c)
    used = set(nn.tolist())
    assert set(out.tolist()) <= used | {2}
    assert not math.isnan(float(out.sum()))
