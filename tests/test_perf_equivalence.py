"""The fast assignment (fine-bin tables over the cost envelope, log-domain relevance decision,
selection-based β) gives exactly what the direct computation gives.

Oracles: the literal float64 equations of tests/literal.py; the same computation done the slow way
in float32 (a full (C x N) cost matrix and argmin); and the library's own direct path (the
pre-optimisation code, forced by raising ``_DIRECT_BELOW``), which must agree bit for bit,
including λ, the ECQ sparsity and β.
"""

import math

import numpy as np
import pytest
import torch

import ecqx.assignment as A
import ecqx.beta as B
import ecqx.entropy as H
import ecqx.envelope as E
from ecqx import assign_layer, codebook
from ecqx.ecqx_method import ECQx
from tests.literal import as_np, literal_ecq, literal_ecqx

SHAPES = [(4000,), (16, 8, 3, 3), (64, 32, 3, 3), (300, 70), (5, 3, 5, 5)]


def weights(seed: int, shape, dtype=torch.float64, tails: float = 6.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    w = torch.randn(n, generator=g, dtype=torch.float64) * 0.05
    w[torch.randperm(n, generator=g)[: max(1, n // 50)]] *= tails  # heavy tails, like trained layers
    return w.reshape(shape).to(dtype)


def lrp_like(w: torch.Tensor, seed: int) -> torch.Tensor:
    """Relevances like LRP's: heavy tailed, many exact zeros, max 1."""
    g = torch.Generator().manual_seed(seed + 1000)
    r = (w.abs().double() * torch.rand(w.shape, generator=g, dtype=torch.float64)) ** 3
    r[torch.rand(w.shape, generator=g) < 0.6] = 0.0
    return (r / r.max()).to(w.dtype)


@pytest.fixture(autouse=True)
def always_fast(monkeypatch):
    """Every layer takes the fast path here, however small (``direct`` switches it off), and the few
    weights near a break are resolved through the envelope's break candidates, not the direct argmin
    that small sets get elsewhere (test_assignment and test_methods cover that one)."""
    monkeypatch.setattr(A, "_DIRECT_BELOW", 0)
    monkeypatch.setattr(E, "DIRECT_RESOLVE", 0)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Many small tensor ops: one thread keeps this file fast on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def direct(*args, **kwargs):
    """The pre-optimisation direct computation of the library, in the same dtype."""
    saved = A._DIRECT_BELOW
    A._DIRECT_BELOW = 1 << 62
    try:
        return assign_layer(*args, **kwargs)
    finally:
        A._DIRECT_BELOW = saved


def slow_float(w: torch.Tensor, c: torch.Tensor, penalty: torch.Tensor, zero_factor=None) -> torch.Tensor:
    """argmin of the full (C x N) cost matrix in w's dtype, zero cost optionally scaled."""
    cost = (c[:, None] - w.reshape(-1)[None]) ** 2 + penalty[:, None]
    if zero_factor is not None:
        z = int((c == 0).nonzero())
        cost[z] = cost[z] * zero_factor
    return cost.argmin(dim=0)


def penalty_of(w, c, Lambda, share, rule="thesis"):
    z = int((c == 0).nonzero())
    pmf = H.probabilities(torch.argmin((c[:, None] - w.reshape(-1)[None]) ** 2, dim=0), c.numel(), z)
    info = H.information_content(pmf)
    lam = Lambda * H.layer_decay(share) * H.lambda_max(w, c, info, z, rule) if Lambda else 0.0
    return torch.where(pmf > 0, lam * info, torch.full_like(info, math.inf)).to(w.dtype), lam


@pytest.mark.parametrize("bits", range(2, 9))
def test_fast_ecq_and_ecqx_equal_literal_float64(bits):
    for i, shape in enumerate(SHAPES[:3]):
        w = weights(bits * 10 + i, shape)
        c = codebook(w, bits).double()
        for Lambda, rule in ((0.0, "thesis"), (0.1, "thesis"), (0.6, "reference"), (2.0, "thesis")):
            a = assign_layer(w, c, Lambda, 0.5, lambda_max_rule=rule)
            np.testing.assert_array_equal(
                a.indices.reshape(-1).numpy(), literal_ecq(as_np(w), as_np(c), Lambda, 0.5, rule)
            )
        r = lrp_like(w, bits + i)
        a = assign_layer(w, c, 0.3, 0.8, relevance=r, p=0.1)
        want = literal_ecqx(as_np(w), as_np(c), 0.3, 0.8, as_np(r), a.beta)
        np.testing.assert_array_equal(a.indices.reshape(-1).numpy(), want)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_equals_direct_path_bit_for_bit(bits, dtype):
    for i, shape in enumerate(SHAPES):
        w = weights(bits * 31 + i, shape, dtype)
        c = codebook(w, bits).to(dtype)
        r = lrp_like(w, i)
        for relevance, p in ((None, 0.1), (r, 0.02), (r.sqrt(), 0.3)):
            fast = assign_layer(w, c, 0.4, 0.6, relevance, p=p)
            slow = direct(w, c, 0.4, 0.6, relevance, p=p)
            assert torch.equal(fast.indices, slow.indices)
            assert (fast.lam, fast.ecq_sparsity, fast.beta) == (slow.lam, slow.ecq_sparsity, slow.beta)


@pytest.mark.parametrize("bits", [2, 4, 7])
def test_float32_equals_full_cost_matrix_in_float32(bits):
    for i, shape in enumerate(SHAPES[1:4]):
        w = weights(bits + 7 * i, shape, torch.float32)
        c = codebook(w, bits)
        penalty, lam = penalty_of(w, c, 0.5, 0.9)
        a = assign_layer(w, c, 0.5, 0.9)
        assert a.lam == lam
        assert torch.equal(a.indices.reshape(-1), slow_float(w, c, penalty))
        r = lrp_like(w, i)
        a = assign_layer(w, c, 0.5, 0.9, relevance=r, rho=3.0)
        factor = 3.0 * (r.reshape(-1) + A.RELEVANCE_EPS) ** a.beta
        assert torch.equal(a.indices.reshape(-1), slow_float(w, c, penalty, factor))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adversarial_weights_on_midpoints_centroids_and_breaks(dtype):
    base = weights(5, (6000,), dtype)
    c = codebook(base, 4).to(dtype)
    penalty, _ = penalty_of(base, c, 0.7, 1.0)
    env = E.envelope(c.tolist(), penalty.tolist(), dtype, (-1.0, 1.0), (-1.0, 1.0))
    mids = (c[1:] + c[:-1]) / 2
    breaks = torch.tensor(env.breaks, dtype=torch.float64).to(dtype)
    special = torch.cat([mids, c, breaks, torch.nextafter(breaks, breaks + 1), torch.nextafter(mids, mids - 1)])
    w = torch.cat([base, special.repeat(20)])
    assert torch.equal(A.nearest_indices(w, c), torch.argmin((c[:, None] - w[None]) ** 2, dim=0))
    for relevance in (None, lrp_like(w, 3)):
        fast, slow = assign_layer(w, c, 0.7, 1.0, relevance), direct(w, c, 0.7, 1.0, relevance)
        assert torch.equal(fast.indices, slow.indices) and fast.beta == slow.beta


@pytest.mark.parametrize(
    "make",
    [
        lambda g: torch.rand(5000, generator=g) * 0.1,  # no negative weights: unsigned grid
        lambda g: torch.full((5000,), 0.02),  # constant layer
        lambda g: torch.randn(5000, generator=g) * 1e-15,  # tiny magnitudes
        lambda g: torch.randn(5000, generator=g) * 1e12,  # huge magnitudes
        lambda g: torch.cat([torch.randn(4990, generator=g) * 0.01, torch.tensor([50.0] * 5 + [-40.0] * 5)]),
        lambda g: 1.0 + torch.randn(5000, generator=g) * 1e-6,  # narrow range far from zero
        lambda g: torch.where(torch.rand(5000, generator=g) < 0.5, 0.0, torch.randn(5000, generator=g)),  # exact zeros
    ],
)
def test_degenerate_layers(make):
    w = make(torch.Generator().manual_seed(0)).float()
    c = codebook(w, 4)
    for Lambda in (0.0, 0.3, 5.0):
        for relevance in (None, lrp_like(w, 1), torch.ones_like(w), torch.zeros_like(w)):
            fast, slow = assign_layer(w, c, Lambda, 1.0, relevance), direct(w, c, Lambda, 1.0, relevance)
            assert torch.equal(fast.indices, slow.indices), (Lambda, relevance is None)
            assert (fast.lam, fast.ecq_sparsity, fast.beta) == (slow.lam, slow.ecq_sparsity, slow.beta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nearest_indices_large(dtype):
    for bits in (2, 5, 8):
        w = weights(bits, (50_000,), dtype)
        c = codebook(w, bits).to(dtype)
        want = torch.cat([torch.argmin((c[:, None] - part[None]) ** 2, dim=0) for part in w.split(10_000)])
        assert torch.equal(A.nearest_indices(w, c), want)


def test_method_compress_uses_compact_indices_equal_to_assign_layer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Flatten(), torch.nn.Linear(16 * 36, 10))
    method = ECQx(ECQx.Config(bits=4))
    method.prepare(model)
    method.relevance = {name: lrp_like(w, 0) for name, w in method.latent.items()}
    method.compress(model, None)
    n_max = max(w.numel() for w in method.latent.values())
    for name, latent in method.latent.items():
        want = direct(latent, method.centroids[name], 0.2, latent.numel() / n_max, method.relevance_of(name))
        assert method.indices[name].dtype == torch.uint8
        assert torch.equal(method.indices[name].long(), want.indices)


def test_far_outliers_and_ties_at_breaks():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(20_000, generator=g) * 0.01
    w[:3] = torch.tensor([1e4, -3e3, 2e5])  # far beyond the grid: bins cover the centroids only
    w[3:5000] = 0.0  # many exact zeros: exactly on the break between the two smallest non-zero levels
    c = codebook(w, 4)
    for relevance in (None, lrp_like(w, 2)):
        fast, slow = assign_layer(w, c, 0.3, 1.0, relevance), direct(w, c, 0.3, 1.0, relevance)
        assert torch.equal(fast.indices, slow.indices)
        assert (fast.lam, fast.ecq_sparsity, fast.beta) == (slow.lam, slow.ecq_sparsity, slow.beta)
    assert torch.equal(A.nearest_indices(w, c), torch.argmin((c[:, None] - w[None]) ** 2, dim=0))


def original_choose_beta(log_r, log_t, beta0, k_lo, k_hi):
    """The pre-optimisation β selection (masking, kthvalue, unique), as the oracle."""
    decreasing = log_r < 0
    constant_zero = int(((~decreasing) & (log_t > 0)).sum())
    b = log_t[decreasing] / log_r[decreasing]
    b = torch.where(torch.isnan(b), torch.full_like(b, math.inf), b)
    count0 = constant_zero + int((b < beta0).sum())
    if k_lo <= count0 <= k_hi or b.numel() == 0:
        return beta0
    want = min(max(count0, k_lo), k_hi) - constant_zero
    if want <= 0:
        return float(b.min()) - 1.0 if torch.isfinite(b.min()) else beta0
    if want >= b.numel():
        return float(b.max()) + 1.0 if torch.isfinite(b.max()) else beta0
    below, above = b.kthvalue(want).values.item(), b.kthvalue(want + 1).values.item()
    if below == above:
        sorted_b = torch.unique(b)
        pos = int(torch.searchsorted(sorted_b, torch.tensor(below, dtype=b.dtype)))
        above = sorted_b[pos + 1].item() if pos + 1 < sorted_b.numel() else below + 1.0
    if math.isinf(below):
        return above - 1.0 if math.isfinite(above) else beta0
    if math.isinf(above):
        return below + 1.0
    return (below + above) / 2.0


@pytest.mark.parametrize("n", [5000, 100_000])
def test_beta_selection_equals_the_original(n):
    g = torch.Generator().manual_seed(n)
    r = torch.rand(n, generator=g) ** 4
    r[torch.rand(n, generator=g) < 0.3] = 0.0
    r[:3] = 1.0  # ln R = 0
    log_t = torch.randn(n, generator=g)
    log_t[5:50] = torch.round(log_t[5:50])  # ties in b
    log_t[50:60] = math.inf
    log_r = torch.log(r + A.RELEVANCE_EPS).clamp(max=0)
    for k_lo, k_hi in ((0, 0), (n // 3, n // 3 + 10), (n // 2, n // 2), (n - 5, n), (n, n), (10, 20), (1, 2)):
        for beta0 in (0.01, 0.3, 5.0):
            want = original_choose_beta(log_r, log_t, beta0, k_lo, k_hi)
            got = B.choose_beta(log_r.clone().copysign_(-1.0), log_t, beta0, k_lo, k_hi)
            assert got == want, (k_lo, k_hi, beta0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_pair_equals_the_sorted_values(dtype):
    """The sampled bracket and numpy's selection give the k-th and (k+1)-th of the sorted values,
    with ties, infinities and ranks at both ends and around the bracket's edges."""
    n = 200_003
    g = torch.Generator().manual_seed(7)
    b = torch.randn(n, generator=g, dtype=torch.float64).to(dtype)
    b[:20_000] = torch.round(b[:20_000] * 4)  # heavy ties
    b[20_000:20_100], b[20_100:20_150] = -math.inf, math.inf
    b = b[torch.randperm(n, generator=g)]
    ordered = b.sort().values.tolist() + [math.inf]
    for k in (1, 2, 100, 101, n // 64, n // 3, n // 2, n - 200, n - 1, n):
        assert B.kth_pair(b, k) == (ordered[k - 1], ordered[k]), k
        assert B.kth_smallest(b, k) == ordered[k - 1]


def test_relevance_shortcuts_give_the_same_relevances(monkeypatch):
    """Output reuse, the skipped layer backward, ZPlus on non-negative inputs and the three-pass
    stabilizer change no number."""
    from benchmarks.models import MODELS
    from ecqx import relevance as R
    from ecqx.layers import select_layers

    models = [("vgg_tiny", (3, 32, 32)), ("resnet_tiny", (3, 32, 32)), ("mlp_gsc_tiny", (490,))]
    plain = torch.nn.Sequential(  # reflect padding: the generic (re-run forward) weight gradient
        torch.nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 25, 5),
    )
    fast = {}
    for name, shape in models:
        torch.manual_seed(0)
        model = MODELS.get(name)(5, shape)
        model.train()
        model(torch.randn(4, *shape))
        x, y = torch.randn(3, *shape), torch.randint(0, 5, (3,))
        fast[name] = (
            model,
            x,
            y,
            R.WeightRelevance("epsilon_plus_flat", model.lrp_canonizer)(model, x, y, select_layers(model)),
        )
    x, y = torch.randn(3, 2, 5, 5), torch.randint(0, 5, (3,))
    fast["plain"] = (plain, x, y, R.WeightRelevance("epsilon_plus", "none")(plain, x, y, select_layers(plain)))
    monkeypatch.setattr(R._WeightRelevanceHook, "_detour", lambda self, module, input, output: None)
    monkeypatch.setattr(R, "_weight_gradient", lambda module, a, grad_out: None)
    monkeypatch.setattr(R, "_zplus_nonnegative_input", lambda rule, module, gi, go: rule.backward(module, gi, go))
    monkeypatch.setattr(R, "stabilized", zennit_stabilize)
    for name, (model, x, y, got) in fast.items():
        composite, canonizer = (
            ("epsilon_plus", "none") if name == "plain" else ("epsilon_plus_flat", model.lrp_canonizer)
        )
        want = R.WeightRelevance(composite, canonizer)(model, x, y, select_layers(model))
        for layer in want:
            assert torch.equal(got[layer], want[layer]), (name, layer)


def zennit_stabilize(z, epsilon):
    from zennit.core import stabilize

    return stabilize(z, epsilon)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stabilized_equals_zennit_bit_for_bit(dtype):
    from ecqx import relevance as R

    z = torch.tensor([0.0, -0.0, 1e-7, -1e-7, 3.0, -3.0, math.inf, -math.inf, math.nan, 1e-45, -1e-45], dtype=dtype)
    z = torch.cat([z, torch.randn(1000, dtype=dtype) * 1e-6])
    bits = torch.int64 if dtype == torch.float64 else torch.int32  # compare the bit patterns (NaN, -0)
    for eps in (1e-6, 0.25, 1e-9):
        got, want = R.stabilized(z, eps), zennit_stabilize(z, eps)
        assert got.dtype == want.dtype
        assert torch.equal(got.view(bits), want.view(bits))


def test_plain_stabilizer_is_found_only_for_plain_zplus():
    from zennit.rules import Epsilon, ZPlus

    from ecqx import relevance as R

    assert R._plain_stabilizer(ZPlus(stabilizer=1e-4)) == 1e-4
    assert R._plain_stabilizer(ZPlus(stabilizer=lambda x: x + 1.0)) is None  # a callable: the rule's own mapper
    assert R._plain_stabilizer(Epsilon(epsilon=1e-3)) == 1e-3  # the epsilon rule's mapper has the same form


def test_cached_relevance_terms_give_the_direct_assignment_between_and_after_lrp_passes():
    """relevance_every > 1: ln R etc. are kept while the EMA tensor is unchanged; the indices equal the
    direct assignment with ``relevance_of`` whether the cache is hit (weights moved) or invalidated
    (EMA updated in place, or replaced)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Flatten(), torch.nn.Linear(16 * 36, 10))
    method = ECQx(ECQx.Config(bits=4, relevance_every=8))
    method.prepare(model)
    method.relevance = {name: lrp_like(w, 0) * 3.0 for name, w in method.latent.items()}
    n_max = max(w.numel() for w in method.latent.values())

    def check():
        method.compress(model, None)
        for name, latent in method.latent.items():
            want = direct(latent, method.centroids[name], 0.2, latent.numel() / n_max, method.relevance_of(name))
            assert torch.equal(method.indices[name].long(), want.indices)
            assert method.layer_stats[name]["beta"] == want.beta

    check()
    terms = dict(method._terms)
    for latent in method.latent.values():  # the weights move: cache hit
        latent.add_(torch.randn_like(latent) * 0.01)
    check()
    assert all(method._terms[name][2] is terms[name][2] for name in terms)
    for name, r in method.relevance.items():  # the EMA moves in place: recomputed
        r.mul_(0.1).add_(lrp_like(method.latent[name], 5), alpha=0.9)
    check()
    assert all(method._terms[name][2] is not terms[name][2] for name in terms)
