"""Entropy-constrained (ECQ) and relevance-adjusted (ECQx) assignment of weights to centroids.

Cost of putting weight w in cluster c (Becking et al. 2022, eq. 4-6):

    ECQ:   d(w, c) = (w - w_c)^2 + λ_l · I_c,   I_c = -log2 P_c
    ECQx:  the zero cluster's cost is multiplied by ρ · R^β (R = layer relevance in [0, 1])

with P_c from the nearest-neighbour histogram (P_0 raised to at least 0.5), λ_l = Λ · δ_l · λ_max,l
and δ_l = (N_l/N_max + 0.05)/1.05. Clusters that are empty under nearest neighbour cannot be chosen.
Everything is computed in the weight's dtype, one vectorised (chunked) pass per layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

P0_MIN = 0.5  # P_0 is raised to at least this, so zero is always cheapest in information
SUSTAIN = 0.05  # δ_l = (N_l/N_max + SUSTAIN) / (1 + SUSTAIN)
RELEVANCE_EPS = 1e-12  # added to R before R^β
LAMBDA_MAX_RULES = ("thesis", "reference")
_CHUNK_ELEMENTS = 1 << 22  # bound on (clusters x weights) elements materialised at once


@dataclass(frozen=True)
class Assignment:
    """Result of :func:`assign_layer`.

    indices: centroid index per weight (int64, weight shape).
    lam: λ_l actually used (cost units per bit).
    ecq_sparsity: fraction of weights plain ECQ assigns to zero.
    beta: the relevance exponent β chosen (None without relevance).
    """

    indices: Tensor
    lam: float
    ecq_sparsity: float
    beta: float | None = None


def layer_decay(layer_share: float) -> float:
    """δ_l = (N_l/N_max + 0.05)/1.05 for ``layer_share`` = N_l/N_max in (0, 1]."""
    return (layer_share + SUSTAIN) / (1.0 + SUSTAIN)


def nearest_indices(weight: Tensor, centroids: Tensor) -> Tensor:
    """argmin_c (w - w_c)^2 per weight (ties to the lower index), without a (C x N) matrix."""
    w = weight.reshape(-1)
    c = centroids.to(w.dtype)
    if c.numel() == 1:
        return torch.zeros_like(w, dtype=torch.long).reshape(weight.shape)
    mids = (c[1:] + c[:-1]) / 2
    guess = torch.bucketize(w, mids)
    best, best_d = None, None
    for offset in (-1, 0, 1):  # the exact argmin is a neighbour of the bucket, whatever the rounding
        cand = (guess + offset).clamp(0, c.numel() - 1)
        d = (c[cand] - w) ** 2
        if best is None:
            best, best_d = cand, d
            continue
        better = (d < best_d) | ((d == best_d) & (cand < best))
        best = torch.where(better, cand, best)
        best_d = torch.where(better, d, best_d)
    return best.reshape(weight.shape)


def probabilities(nearest: Tensor, num_centroids: int, zero_index: int) -> Tensor:
    """P_c (float64, shape (C,)): nearest-neighbour histogram with P_0 raised to >= 0.5."""
    counts = torch.bincount(nearest.reshape(-1), minlength=num_centroids).to(torch.float64)
    pmf = counts / max(nearest.numel(), 1)
    if pmf[zero_index] < P0_MIN:
        nonzero_mass = 1.0 - pmf[zero_index].item()
        pmf = pmf * (P0_MIN / nonzero_mass) if nonzero_mass > 0 else pmf
        pmf[zero_index] = P0_MIN
    return pmf


def information_content(pmf: Tensor) -> Tensor:
    """I_c = -log2 P_c in bits (inf for empty clusters)."""
    return -torch.log2(pmf)


def lambda_max(weight: Tensor, centroids: Tensor, info: Tensor, zero_index: int, rule: str = "thesis") -> float:
    """λ at which the extreme weight of a side would move to the zero cluster.

    thesis:    [w_ext^2 - (w_ext - c_ext)^2] / (I_ext - I_0), the smaller of the two sides.
    reference: [(c_ext - w_ext)^2 - (0 - w_ext)]^2 / (I_ext - I_0), the larger side (official code).
    A side counts only if it has a weight whose nearest centroid is not zero and I_ext > I_0;
    with no such side λ_max is 0.
    """
    if rule not in LAMBDA_MAX_RULES:
        raise ValueError(f"lambda_max_rule must be one of {LAMBDA_MAX_RULES}, got {rule!r}")
    w = weight.reshape(-1).to(torch.float64)
    if w.numel() == 0:
        return 0.0
    c = centroids.to(torch.float64)
    values = []
    for w_ext in (w.min(), w.max()):
        k = nearest_indices(w_ext.reshape(1), c).item()
        gain = (info[k] - info[zero_index]).item()
        if k == zero_index or not gain > 0 or math.isinf(gain):
            continue
        c_ext = c[k]
        if rule == "thesis":
            values.append(((w_ext**2 - (w_ext - c_ext) ** 2) / gain).item())
        else:
            values.append((((c_ext - w_ext) ** 2 - (0 - w_ext)) ** 2 / gain).item())
    if not values:
        return 0.0
    return min(values) if rule == "thesis" else max(values)


def _chunks(n: int, num_centroids: int):
    size = max(1, _CHUNK_ELEMENTS // max(num_centroids, 1))
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _zero_and_best_nonzero(w: Tensor, c: Tensor, penalty: Tensor, zero_index: int):
    """Per weight: zero-cluster cost c0, best non-zero cost m and its index j (chunked)."""
    n = w.numel()
    c0 = w * w + penalty[zero_index]
    m = torch.empty_like(w)
    j = torch.empty(n, dtype=torch.long, device=w.device)
    penalty_nz = penalty.clone()
    penalty_nz[zero_index] = math.inf
    for sl in _chunks(n, c.numel()):
        cost = (c[:, None] - w[None, sl]) ** 2 + penalty_nz[:, None]
        m[sl], j[sl] = cost.min(dim=0)
    return c0, m, j


def _zero_wins(zero_cost: Tensor, m: Tensor, j: Tensor, zero_index: int) -> Tensor:
    """argmin's rule: zero is chosen if strictly cheaper, or equally cheap and earlier."""
    return (zero_cost < m) | ((zero_cost == m) & (zero_index < j))


def _choose_beta(log_r: Tensor, log_t: Tensor, beta0: float, k_lo: int, k_hi: int) -> float:
    """A β whose zero count ``#{β·ln R < ln t}`` lies in [k_lo, k_hi], nearest to β0's count.

    For ln R < 0 a weight is zero iff β > b_i = ln t_i / ln R_i, so the count is a step function of β;
    the wanted count is hit by a β between two neighbouring sorted thresholds (k-th values).
    """
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
        top = b.max()
        return float(top) + 1.0 if torch.isfinite(top) else beta0
    below = b.kthvalue(want).values.item()
    above = b.kthvalue(want + 1).values.item()
    if below == above:  # ties: take the achievable count closest to the wanted one
        sorted_b = torch.unique(b)
        pos = int(torch.searchsorted(sorted_b, torch.tensor(below, dtype=b.dtype)))
        above = sorted_b[pos + 1].item() if pos + 1 < sorted_b.numel() else below + 1.0
    if math.isinf(below):
        return above - 1.0 if math.isfinite(above) else beta0
    if math.isinf(above):
        return below + 1.0
    return (below + above) / 2.0


def _relevance_factor(relevance: Tensor, rho: float, beta: float) -> Tensor:
    """ρ · (R + ε)^β, the zero cluster's cost multiplier."""
    return rho * (relevance + RELEVANCE_EPS) ** beta


def _start_beta(relevance: Tensor) -> float:
    """β_0 = ln 0.5 / ln mean(R), so that a weight of mean relevance gets R^β = 0.5."""
    mean = relevance.mean().item()
    return math.log(0.5) / math.log(mean) if 0.0 < mean < 1.0 else 1.0


def assign_layer(
    weight: Tensor,
    centroids: Tensor,
    Lambda: float,
    layer_share: float,
    relevance: Tensor | None = None,
    p: float = 0.1,
    rho: float = 2.0,
    lambda_max_rule: str = "thesis",
) -> Assignment:
    """ECQ (``relevance=None``) or ECQx assignment of one layer; see the module docstring.

    weight: any shape; centroids: ascending, shape (C,), containing 0; Lambda: Λ >= 0;
    layer_share: N_l/N_max in (0, 1]; relevance: same shape as weight, in [0, 1];
    p: width of the ECQx sparsity band [max(0, s_ECQ - p), s_ECQ].
    """
    zero_index = int(torch.nonzero(centroids == 0).reshape(-1)[0])
    w = weight.detach().reshape(-1)
    c = centroids.to(w.dtype)
    nearest = nearest_indices(w, c)
    pmf = probabilities(nearest, c.numel(), zero_index)
    info = information_content(pmf)
    lam = 0.0 if Lambda == 0 else Lambda * layer_decay(layer_share) * lambda_max(w, c, info, zero_index, lambda_max_rule)
    penalty = torch.where(pmf > 0, lam * info, torch.full_like(info, math.inf)).to(w.dtype)
    c0, m, j = _zero_and_best_nonzero(w, c, penalty, zero_index)
    zero = _zero_wins(c0, m, j, zero_index)
    ecq_sparsity = zero.double().mean().item() if w.numel() else 0.0
    beta = None
    if relevance is not None:
        r = relevance.detach().reshape(-1).to(w.dtype)
        n = w.numel()
        zeros_ecq = int(zero.sum())
        k_lo, k_hi = max(0, math.ceil(zeros_ecq - p * n - 1e-9)), zeros_ecq
        log_r = torch.log(r + RELEVANCE_EPS).clamp(max=0)
        log_t = torch.log(m) - torch.log(c0) - math.log(rho)
        beta = _choose_beta(log_r, log_t, _start_beta(r), k_lo, k_hi)
        zero = _zero_wins(c0 * _relevance_factor(r, rho, beta), m, j, zero_index)
    indices = torch.where(zero, torch.full_like(j, zero_index), j)
    return Assignment(indices.reshape(weight.shape), lam, ecq_sparsity, beta)


def assign(
    weight: Tensor,
    centroids: Tensor,
    Lambda: float,
    layer_share: float,
    relevance: Tensor | None = None,
    p: float = 0.1,
    rho: float = 2.0,
    lambda_max_rule: str = "thesis",
) -> Tensor:
    """Centroid index per weight (LongTensor, weight shape); see :func:`assign_layer`."""
    return assign_layer(weight, centroids, Lambda, layer_share, relevance, p, rho, lambda_max_rule).indices
