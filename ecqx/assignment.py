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

from ecqx.beta import check_band, choose_beta, reference_beta, skips, start_beta, thresholds
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


@dataclass(frozen=True)
class RelevanceTerms:
    """A layer's relevance prepared once for the ECQx assignment, reusable while R is unchanged
    (e.g. the steps between LRP passes): what the assignment derives from R alone.

    log_r: ln(R + ε) clamped to <= 0, -0.0 where R + ε >= 1 (flat, the weights' dtype);
    beta0: the start β (:func:`ecqx.beta.start_beta`); flat: indices where ln R = 0;
    source, top: R = |source| / top (flat; top None: R = source), read only where needed (:meth:`at`).
    """

    log_r: Tensor
    beta0: float
    flat: Tensor
    source: Tensor
    top: Tensor | None = None

    def at(self, idx: Tensor) -> Tensor:
        """R at flat indices ``idx`` (the same numbers as the whole R's entries)."""
        return self.source[idx] if self.top is None else self.source[idx].abs().div_(self.top)


def relevance_terms(relevance: Tensor, dtype: torch.dtype, top: Tensor | None = None) -> RelevanceTerms:
    """:class:`RelevanceTerms` of R = ``relevance`` (any shape, in [0, 1]) for weights of ``dtype``;
    with ``top``: of R = |relevance| / top, without keeping R itself."""
    source = relevance.detach().reshape(-1).to(dtype)
    r = source if top is None else source.abs().div_(top)
    log_r = torch.add(r, RELEVANCE_EPS).log_().clamp_(max=0).copysign_(-1.0)  # -0.0 where R + ε >= 1
    return RelevanceTerms(log_r, start_beta(r), where_true(log_r == 0), source, top)


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
    m = bins.lookup(c[safe]).sub_(w)
    m.mul_(m).add_(bins.lookup(penalty_nz[safe]))  # (c_j - w)^2 + pen_j in place: the same numbers
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


def _relevance_factor(relevance: Tensor, rho: float, beta: float) -> Tensor:
    """ρ · (R + ε)^β, the zero cluster's cost multiplier."""
    return rho * (relevance + RELEVANCE_EPS) ** beta


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


def _relevance_zeros(c0, m, j, terms: RelevanceTerms, log_t, beta, rho, zero_index, logs_ok: bool) -> Tensor:
    """Which weights ECQx sets to zero: ``_zero_wins(c0 · ρ(R+ε)^β, m, j)``.

    Decided in the log domain, d = β ln(R+ε) - ln t < 0, where |d| exceeds a bound on the rounding
    of both forms (``logs_ok``: see :func:`_logs_decide`); the few others take the direct form.
    """
    fin = torch.finfo(c0.dtype)
    if not logs_ok:
        return _zero_wins(c0 * _relevance_factor(terms.at(slice(None)), rho, beta), m, j, zero_index)
    big = math.log(fin.max) - math.log(fin.tiny)
    bound = SAFETY * fin.eps * (abs(beta) * -math.log(RELEVANCE_EPS) + big + abs(math.log(rho)) + 1.0)
    bound += 4.0 * abs(beta) * RELEVANCE_EPS
    d = (terms.log_r * beta).sub_(log_t)  # finite here: c0 and m are positive normal numbers
    zero = d < 0
    unsure = where_true(d.abs_() <= bound)
    if unsure.numel():
        zero[unsure] = _zero_wins(
            c0[unsure] * _relevance_factor(terms.at(unsure), rho, beta), m[unsure], j[unsure], zero_index
        )
    return zero


def assign_layer(
    weight: Tensor,
    centroids: Tensor,
    Lambda: float,
    layer_share: float,
    relevance: Tensor | RelevanceTerms | None = None,
    p: float = 0.1,
    rho: float = 2.0,
    lambda_max_rule: str = "thesis",
    *,
    pmf: str = "exact",
    band: str = "clip",
    index_dtype: torch.dtype = torch.int64,
) -> Assignment:
    """ECQ (``relevance=None``) or ECQx assignment of one layer; see the module docstring.

    weight: any shape; centroids: ascending, shape (C,), containing 0; Lambda: Λ >= 0;
    layer_share: N_l/N_max in (0, 1]; relevance: same shape as weight, in [0, 1] (or its
    :class:`RelevanceTerms`, the same numbers without recomputing them);
    p: width of the ECQx sparsity band [max(0, s_ECQ - p), s_ECQ];
    lambda_max_rule, pmf, band: ``clean`` or official (``reference``) behaviour, see ``ecqx.profiles``;
    index_dtype: dtype of ``indices`` (uint8 saves conversions when C <= 256).
    """
    check_band(band)
    zero_index = int(torch.nonzero(centroids == 0).reshape(-1)[0])
    w = weight.detach().reshape(-1)
    c = centroids.to(w.dtype)
    n = w.numel()
    span = None if _use_direct(n, c.numel()) else _finite_range(w)
    bins = Bins(w, *span, c.tolist()) if span else None
    counts = _nearest_counts(bins, w, c, span) if bins else torch.bincount(_nearest_direct(w, c), minlength=c.numel())
    probs = pmf_from_counts(counts, n, zero_index, pmf)
    info = information_content(probs)
    lam = 0.0
    if Lambda != 0:
        check_lambda_max_rule(lambda_max_rule)
        extremes = list(span) if span else [float(v) for v in torch.aminmax(w)] if n else []
        lam_max = lambda_max_of_extremes(
            extremes, c.to(torch.float64).tolist(), info.tolist(), zero_index, lambda_max_rule
        )
        lam = Lambda * layer_decay(layer_share) * lam_max
    penalty = torch.where(probs > 0, lam * info, torch.full_like(info, math.inf)).to(w.dtype)
    env = bins.envelope(c, penalty) if bins else None
    zeros_ecq = None
    if relevance is not None and bins is not None and band == "reference":  # the skip rule needs s_ECQ first
        zeros_ecq = count_argmin(bins, w, c, penalty, env, zero_index)
        if skips(zeros_ecq, n, p):
            relevance = None  # the official β search is never entered: relevance has no effect
    if relevance is None and bins is not None:
        idx, zeros = table_argmin(bins, w, c, penalty, env, zero_index)
        return Assignment(idx.to(index_dtype).reshape(weight.shape), lam, zeros / n, None)
    m, j = _best_nonzero(w, c, _nonzero_penalty(penalty, zero_index), bins, span)
    c0 = torch.mul(w, w).add_(penalty[zero_index])
    zero = None
    if zeros_ecq is None:  # the ECQ decision per weight: ECQ's indices (direct path) or its zero count
        zero = _zero_wins(c0, m, j, zero_index)
        zeros_ecq = int(torch.count_nonzero(zero))
    beta = None
    if relevance is not None and not (band == "reference" and skips(zeros_ecq, n, p)):
        terms = relevance if isinstance(relevance, RelevanceTerms) else relevance_terms(relevance, w.dtype)
        logs_ok = _logs_decide(c, penalty, zero_index, span, rho)
        beta, zero = _relevance_assign(c0, m, j, terms, zeros_ecq, p, rho, zero_index, logs_ok, band)
    indices = choose(zero, j, zero_index).to(index_dtype)
    return Assignment(indices.reshape(weight.shape), lam, zeros_ecq / n if n else 0.0, beta)


def _relevance_assign(
    c0, m, j, terms: RelevanceTerms, zeros_ecq: int, p: float, rho: float, zero_index: int, logs_ok, band: str = "clip"
) -> tuple[float, Tensor]:
    """ECQx: β for the sparsity band [zeros_ecq - p·N, zeros_ecq] (``clip``: a β whose zero count
    lies in the band, by selection; ``reference``: the official multiplicative search), then which
    weights go to zero."""
    n, log_r = terms.log_r.numel(), terms.log_r
    log_t = torch.log(m).sub_(torch.log(c0)).sub_(math.log(rho))
    if band == "clip":
        k_lo, k_hi = max(0, math.ceil(zeros_ecq - p * n - 1e-9)), zeros_ecq
        beta = choose_beta(log_r, log_t, terms.beta0, k_lo, k_hi, terms.flat)
    else:
        beta = reference_beta(thresholds(log_r, log_t), terms.beta0, zeros_ecq / n, p)
    logs_ok = logs_ok and abs(beta) < 1e6
    return beta, _relevance_zeros(c0, m, j, terms, log_t, beta, rho, zero_index, logs_ok)


def assign(
    weight: Tensor,
    centroids: Tensor,
    Lambda: float,
    layer_share: float,
    relevance: Tensor | None = None,
    p: float = 0.1,
    rho: float = 2.0,
    lambda_max_rule: str = "thesis",
    *,
    pmf: str = "exact",
    band: str = "clip",
) -> Tensor:
    """Centroid index per weight (LongTensor, weight shape); see :func:`assign_layer`. With
    ``pmf="reference", lambda_max_rule="reference"`` (and ``band="reference"`` for ECQx) it is the
    official code's ``ecq()`` assignment."""
    return assign_layer(
        weight, centroids, Lambda, layer_share, relevance, p, rho, lambda_max_rule, pmf=pmf, band=band
    ).indices
