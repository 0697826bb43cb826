"""Entropy-constrained (ECQ) and relevance-adjusted (ECQx) assignment of weights to centroids.

Cost of putting weight w in cluster c (Becking et al. 2022, eq. 4-6):

    ECQ:   d(w, c) = (w - w_c)^2 + λ_l · I_c,   I_c = -log2 P_c
    ECQx:  the zero cluster's cost is multiplied by ρ · R^β (R = layer relevance in [0, 1])

with P_c from the nearest-neighbour histogram (P_0 raised to at least 0.5), λ_l = Λ · δ_l · λ_max,l
and δ_l = (N_l/N_max + 0.05)/1.05. Clusters that are empty under nearest neighbour cannot be chosen.
ECQx's β is chosen so the layer's sparsity lands in [max(0, s_ECQ - p), s_ECQ]; the official code
instead skips the search (relevance has no effect) whenever s_ECQ <= p.
Everything is computed in the weight's dtype and gives exactly what the direct (C x N) argmin gives.

Speed (large layers): over w, cluster k's cost is the parabola (w - w_c)^2 + pen_k, so the argmin is
the lower envelope of C parabolas of equal curvature: a few clusters, each winning on one interval.
Weights are mapped to fine bins by arithmetic, a small per-layer table gives each bin's winner, and
only weights in bins near an interval boundary (within a proven bound on float rounding) are
resolved by the direct computation. See :class:`Bins` and :func:`envelope`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ecqx.entropy import (
    check_lambda_max_rule,
    information_content,
    lambda_max_of_extremes,
    layer_decay,
    pmf_from_counts,
)
from ecqx.envelope import (
    SAFETY,
    Bins,
    choose,
    count_argmin,
    direct_min,
    index_dtype,
    resolve,
    table_argmin,
    where_true,
)

RELEVANCE_EPS = 1e-12  # added to R before R^β
_DIRECT_BELOW = 1 << 14  # layers with fewer (weights x clusters) use the direct computation


@dataclass(frozen=True)
class Assignment:
    """Result of :func:`assign_layer`.

    indices: centroid index per weight (weight shape; int64 unless ``index_dtype`` asked otherwise).
    lam: λ_l actually used (cost units per bit).
    ecq_sparsity: fraction of weights plain ECQ assigns to zero.
    beta: the relevance exponent β chosen (None without relevance).
    """

    indices: Tensor
    lam: float
    ecq_sparsity: float
    beta: float | None = None


def _use_direct(n: int, num_centroids: int) -> bool:
    return n * num_centroids < _DIRECT_BELOW


def _finite_range(w: Tensor) -> tuple[float, float] | None:
    """(min w, max w) as Python floats, or None when empty or not finite (direct path then)."""
    if w.numel() == 0:
        return None
    lo, hi = (float(v) for v in torch.aminmax(w))
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def _nearest_direct(w: Tensor, c: Tensor) -> Tensor:
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
    return best


def nearest_indices(weight: Tensor, centroids: Tensor, dtype: torch.dtype = torch.long) -> Tensor:
    """argmin_c (w - w_c)^2 per weight (weight shape; ties to the lower index), without a (C x N)
    matrix. ``centroids`` must be ascending; ``dtype``: int64 by default (uint8 saves conversions
    for up to 256 centroids)."""
    w = weight.reshape(-1)
    c = centroids.to(w.dtype)
    if c.numel() == 1:
        return torch.zeros_like(w, dtype=dtype).reshape(weight.shape)
    span = None if _use_direct(w.numel(), c.numel()) else _finite_range(w)
    if span is None:
        return _nearest_direct(w, c).to(dtype).reshape(weight.shape)
    bins = Bins(w, *span, c.tolist())
    zeros = torch.zeros_like(c)
    env = bins.envelope(c, zeros)
    return table_argmin(bins, w, c, zeros, env)[0].to(dtype).reshape(weight.shape)


def _nearest_counts(bins: Bins, w: Tensor, c: Tensor, span: tuple[float, float]) -> Tensor:
    """Nearest-neighbour histogram (int64, (C,)) from the bin counts; weights of bins near a
    midpoint are resolved one by one."""
    num = c.numel()
    if num == 1:
        return torch.tensor([w.numel()], dtype=torch.long, device=w.device)
    zeros = torch.zeros_like(c)
    env = bins.envelope(c, zeros)
    table = bins.table(env, num).to(bins.t.device)
    counts = torch.zeros(num + 1, dtype=torch.long, device=w.device).index_add_(0, table, bins.counts())[:num]
    unsafe = where_true((table == num).index_select(0, bins.t))
    if unsafe.numel():
        counts += torch.bincount(resolve(w[unsafe], env, c, zeros)[1], minlength=num)
    return counts


# -- ECQ costs and the ECQx relevance step ---------------------------------------------------------
def _nonzero_penalty(penalty: Tensor, zero_index: int) -> Tensor:
    penalty_nz = penalty.clone()
    penalty_nz[zero_index] = math.inf
    return penalty_nz


def _best_nonzero(w: Tensor, c: Tensor, penalty_nz: Tensor, bins: Bins | None, span) -> tuple[Tensor, Tensor]:
    """Per weight: best non-zero cost m and its index j (int64 on the direct path)."""
    if bins is None:
        return direct_min(w, c, penalty_nz)
    env = bins.envelope(c, penalty_nz)
    if env is None:  # no non-zero cluster is available: what the direct min gives
        return torch.full_like(w, math.inf), torch.zeros_like(w, dtype=torch.long)
    dtype, sentinel = index_dtype(c.numel())
    table = bins.table(env, sentinel)
    safe = table.clamp(min=0, max=c.numel() - 1).to(c.device)
    j = bins.lookup(table.to(dtype))
    m = (bins.lookup(c[safe]) - w) ** 2 + bins.lookup(penalty_nz[safe])
    unsafe = where_true(j == sentinel)
    if unsafe.numel():
        m_u, j_u = resolve(w[unsafe], env, c, penalty_nz)
        m[unsafe], j[unsafe] = m_u, j_u.to(dtype)
    return m, j


def _zero_wins(zero_cost: Tensor, m: Tensor, j: Tensor, zero_index: int) -> Tensor:
    """argmin's rule: zero is chosen if strictly cheaper, or equally cheap and earlier."""
    zero = zero_cost < m
    tie = zero_cost == m
    if int(torch.count_nonzero(tie)):
        zero |= tie & (j > zero_index)
    return zero


def _kth_pair(b: Tensor, k: int) -> tuple[float, float]:
    """The k-th and (k+1)-th smallest values of ``b`` (1-based; +inf past the end), exactly.

    Large inputs: a random sample (fixed seed) brackets rank k, one pass counts what lies below the
    bracket, and the exact selection runs on the few inside it (the full selection is the fallback)."""
    n = b.numel()
    if n > 1 << 16:
        picks = torch.randint(0, n, (16384,), generator=torch.Generator().manual_seed(n)).to(b.device)
        sample = b[picks].sort().values
        at, spread = (k * sample.numel()) // n, 2 * math.isqrt(sample.numel()) + 8
        lo = sample[at - spread].item() if at >= spread else -math.inf
        hi = sample[at + spread].item() if at + spread < sample.numel() else math.inf
        below = int(torch.count_nonzero(b < lo))
        inside = b[where_true((b >= lo) & (b <= hi))]
        top = below + inside.numel()  # ranks below+1 .. top lie inside
        if below < k and (k < top or top == n):
            kth = inside.kthvalue(k - below).values.item()
            return kth, _min_above(inside, kth, k - below) if k < top else math.inf
    kth = b.kthvalue(k).values.item()
    return kth, _min_above(b, kth, k) if k < n else math.inf


def _min_above(b: Tensor, kth: float, k: int) -> float:
    """The (k+1)-th smallest of ``b`` (k < numel) given its k-th smallest value."""
    if int(torch.count_nonzero(b <= kth)) > k:
        return kth
    return b[where_true(b > kth)].min().item()


def _choose_beta(log_r: Tensor, log_t: Tensor, beta0: float, k_lo: int, k_hi: int) -> float:
    """A β whose zero count ``#{β·ln R < ln t}`` lies in [k_lo, k_hi], nearest to β0's count.

    For ln R < 0 a weight is zero iff β > b_i = ln t_i / ln R_i, so the count is a step function of β;
    the wanted count is hit by a β between two neighbouring sorted thresholds (k-th values).
    Weights with ln R = 0 are zero for every β (ln t > 0) or for none; they sit at -inf / +inf of b.
    """
    # log_r is -0.0 where ln R = 0, so those weights get b = -inf (ln t > 0) or +inf / NaN (else)
    b = (log_t / log_r).nan_to_num_(nan=math.inf, posinf=math.inf, neginf=-math.inf)
    count0 = int(torch.count_nonzero(b < beta0))
    if k_lo <= count0 <= k_hi:
        return beta0
    flat = where_true(log_r == 0)  # ln R = 0: typically the one weight of largest R
    n_dec = b.numel() - flat.numel()
    constant_zero = int(torch.count_nonzero(log_t[flat] > 0))
    if n_dec == 0:
        return beta0
    target = min(max(count0, k_lo), k_hi)
    if target <= constant_zero:
        low = _kth_pair(b, constant_zero + 1)[0]  # min over the decreasing weights
        return low - 1.0 if math.isfinite(low) else beta0
    if target >= constant_zero + n_dec:
        top = _kth_pair(b, constant_zero + n_dec)[0]
        return top + 1.0 if math.isfinite(top) else beta0
    below, above = _kth_pair(b, target)
    if below == above:  # ties: take the achievable count closest to the wanted one
        larger = b[where_true((b > below) & (log_r < 0))]
        above = larger.min().item() if larger.numel() else below + 1.0
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


def _logs_decide(c: Tensor, penalty: Tensor, zero_index: int, span, rho: float) -> bool:
    """Whether costs, ρ and β keep c0·ρ(R+ε)^β and m well inside the normal float range, so that
    under- or overflow of one form comes with a log-domain gap far larger than the rounding."""
    if span is None:
        return False
    fin = torch.finfo(penalty.dtype)
    low, high = fin.tiny**0.25, fin.max**0.25
    pens = [p for p in penalty.tolist() if math.isfinite(p)]
    nz = [p for k, p in enumerate(penalty.tolist()) if k != zero_index and math.isfinite(p)]
    reach = max(abs(span[0]), abs(span[1])) + max(abs(float(c[0])), abs(float(c[-1])))
    return (
        bool(nz)
        and min(nz) > low
        and penalty[zero_index].item() > low
        and reach**2 + max(pens) < high
        and 2.0**-16 <= rho <= 2.0**16
    )


def _relevance_zeros(c0, m, j, r, log_r, log_t, beta, rho, zero_index, logs_ok: bool) -> Tensor:
    """Which weights ECQx sets to zero: ``_zero_wins(c0 · ρ(R+ε)^β, m, j)``.

    Decided in the log domain, d = β ln(R+ε) - ln t < 0, where |d| exceeds a bound on the rounding
    of both forms (``logs_ok``: see :func:`_logs_decide`); the few others take the direct form.
    """
    fin = torch.finfo(c0.dtype)
    if not logs_ok:
        return _zero_wins(c0 * _relevance_factor(r, rho, beta), m, j, zero_index)
    big = math.log(fin.max) - math.log(fin.tiny)
    bound = SAFETY * fin.eps * (abs(beta) * -math.log(RELEVANCE_EPS) + big + abs(math.log(rho)) + 1.0)
    bound += 4.0 * abs(beta) * RELEVANCE_EPS
    d = (log_r * beta).sub_(log_t)  # finite here: c0 and m are positive normal numbers
    zero = d < 0
    unsure = where_true(d.abs_() <= bound)
    if unsure.numel():
        zero[unsure] = _zero_wins(
            c0[unsure] * _relevance_factor(r[unsure], rho, beta), m[unsure], j[unsure], zero_index
        )
    return zero


def assign_layer(
    weight: Tensor,
    centroids: Tensor,
    Lambda: float,
    layer_share: float,
    relevance: Tensor | None = None,
    p: float = 0.1,
    rho: float = 2.0,
    lambda_max_rule: str = "thesis",
    *,
    index_dtype: torch.dtype = torch.int64,
) -> Assignment:
    """ECQ (``relevance=None``) or ECQx assignment of one layer; see the module docstring.

    weight: any shape; centroids: ascending, shape (C,), containing 0; Lambda: Λ >= 0;
    layer_share: N_l/N_max in (0, 1]; relevance: same shape as weight, in [0, 1];
    p: width of the ECQx sparsity band [max(0, s_ECQ - p), s_ECQ];
    index_dtype: dtype of ``indices`` (uint8 saves conversions when C <= 256).
    """
    zero_index = int(torch.nonzero(centroids == 0).reshape(-1)[0])
    w = weight.detach().reshape(-1)
    c = centroids.to(w.dtype)
    n = w.numel()
    span = None if _use_direct(n, c.numel()) else _finite_range(w)
    bins = Bins(w, *span, c.tolist()) if span else None
    counts = _nearest_counts(bins, w, c, span) if bins else torch.bincount(_nearest_direct(w, c), minlength=c.numel())
    pmf = pmf_from_counts(counts, n, zero_index)
    info = information_content(pmf)
    lam = 0.0
    if Lambda != 0:
        check_lambda_max_rule(lambda_max_rule)
        extremes = list(span) if span else [float(v) for v in torch.aminmax(w)] if n else []
        lam_max = lambda_max_of_extremes(
            extremes, c.to(torch.float64).tolist(), info.tolist(), zero_index, lambda_max_rule
        )
        lam = Lambda * layer_decay(layer_share) * lam_max
    penalty = torch.where(pmf > 0, lam * info, torch.full_like(info, math.inf)).to(w.dtype)
    env = bins.envelope(c, penalty) if bins else None
    if relevance is None and bins is not None:
        idx, zeros = table_argmin(bins, w, c, penalty, env, zero_index)
        return Assignment(idx.to(index_dtype).reshape(weight.shape), lam, zeros / n, None)
    m, j = _best_nonzero(w, c, _nonzero_penalty(penalty, zero_index), bins, span)
    c0 = w * w + penalty[zero_index]
    zero = None
    if bins is None:  # direct path: the ECQ decision per weight
        zero = _zero_wins(c0, m, j, zero_index)
        zeros_ecq = int(torch.count_nonzero(zero))
    else:
        zeros_ecq = count_argmin(bins, w, c, penalty, env, zero_index)
    beta = None
    if relevance is not None:
        r = relevance.detach().reshape(-1).to(w.dtype)
        beta, zero = _relevance_assign(
            c0, m, j, r, zeros_ecq, p, rho, zero_index, _logs_decide(c, penalty, zero_index, span, rho)
        )
    indices = choose(zero, j, zero_index).to(index_dtype)
    return Assignment(indices.reshape(weight.shape), lam, zeros_ecq / n if n else 0.0, beta)


def _relevance_assign(
    c0, m, j, r, zeros_ecq: int, p: float, rho: float, zero_index: int, logs_ok
) -> tuple[float, Tensor]:
    """ECQx: β from the sparsity band [zeros_ecq - p·N, zeros_ecq], then which weights go to zero."""
    n = r.numel()
    k_lo, k_hi = max(0, math.ceil(zeros_ecq - p * n - 1e-9)), zeros_ecq
    log_r = torch.log(r + RELEVANCE_EPS).clamp_(max=0).copysign_(-1.0)  # -0.0 where R + ε >= 1
    log_t = torch.log(m).sub_(torch.log(c0)).sub_(math.log(rho))
    beta = _choose_beta(log_r, log_t, _start_beta(r), k_lo, k_hi)
    logs_ok = logs_ok and abs(beta) < 1e6
    return beta, _relevance_zeros(c0, m, j, r, log_r, log_t, beta, rho, zero_index, logs_ok)


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
