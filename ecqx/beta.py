"""ECQx's relevance exponent β: the search for the β that puts a layer's sparsity in the band.

The zero cluster's cost is multiplied by ρ·(R + ε)^β. For ln R < 0 a weight goes to zero iff
β > b_i = ln t_i / ln R_i (t_i: its best non-zero cost over its zero cost over ρ), so the zero count
is a step function of β, #{b < β}.

clip       β is picked by selection on the sorted thresholds so that the zero count lies in
           [max(0, s_ECQ - p)·N, s_ECQ·N], nearest to the count of β_0 = ln 0.5 / ln mean(R).
reference  the official code's search: none when s_ECQ <= p; else multiplicative steps from β_0.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ecqx.envelope import where_true


def kth_pair(b: Tensor, k: int) -> tuple[float, float]:
    """The k-th and (k+1)-th smallest values of ``b`` (1-based; +inf past the end), exactly.

    Large inputs: a random sample (fixed seed) brackets rank k, one pass counts what lies below the
    bracket, and the exact selection runs on the few inside it (the full selection is the fallback)."""
    n = b.numel()
    if n > 1 << 16:
        size = min(16384, n >> 6)  # sample: 1/64 of the weights (the bracket holds ~4/sqrt(size) of them)
        picks = torch.randint(0, n, (size,), generator=torch.Generator().manual_seed(n)).to(b.device)
        sample = b[picks]
        at, spread = (k * size) // n, 2 * math.isqrt(size) + 8  # bracket: sorted sample[at ± spread]
        lo = kth_smallest(sample, at - spread + 1) if at >= spread else -math.inf
        hi = kth_smallest(sample, at + spread + 1) if at + spread < size else math.inf
        mask = b >= lo  # no NaN in b: the complement is b < lo
        below = n - int(torch.count_nonzero(mask))
        inside = b[mask.logical_and_(b <= hi)]  # ~4/sqrt(size) of b: a boolean index beats where_true
        top = below + inside.numel()  # ranks below+1 .. top lie inside
        if below < k and (k < top or top == n):
            kth = kth_smallest(inside, k - below)
            return kth, _min_above(inside, kth, k - below) if k < top else math.inf
    kth = kth_smallest(b, k)
    return kth, _min_above(b, kth, k) if k < n else math.inf


def kth_smallest(x: Tensor, k: int) -> float:
    """The k-th smallest value of the flat ``x`` (1-based), exactly: numpy's introselect on the CPU
    (2-10x faster than ``kthvalue`` there; selection does no arithmetic, so the same value)."""
    if x.device.type == "cpu":
        return float(np.partition(x.numpy(), k - 1)[k - 1])
    return x.kthvalue(k).values.item()


def _min_above(b: Tensor, kth: float, k: int) -> float:
    """The (k+1)-th smallest of ``b`` (k < numel) given its k-th smallest value."""
    if int(torch.count_nonzero(b <= kth)) > k:
        return kth
    return b[where_true(b > kth)].min().item()


def choose_beta(log_r: Tensor, log_t: Tensor, beta0: float, k_lo: int, k_hi: int, flat: Tensor | None = None) -> float:
    """A β whose zero count ``#{β·ln R < ln t}`` lies in [k_lo, k_hi], nearest to β0's count.

    For ln R < 0 a weight is zero iff β > b_i = ln t_i / ln R_i, so the count is a step function of β;
    the wanted count is hit by a β between two neighbouring sorted thresholds (k-th values).
    Weights with ln R = 0 are zero for every β (ln t > 0) or for none; they sit at -inf / +inf of b.
    flat: the indices where ln R = 0 when known (else found here).
    """
    b = thresholds(log_r, log_t)
    count0 = int(torch.count_nonzero(b < beta0))
    if k_lo <= count0 <= k_hi:
        return beta0
    if flat is None:
        flat = where_true(log_r == 0)  # ln R = 0: typically the one weight of largest R
    n_dec = b.numel() - flat.numel()
    constant_zero = int(torch.count_nonzero(log_t[flat] > 0))
    if n_dec == 0:
        return beta0
    target = min(max(count0, k_lo), k_hi)
    if target <= constant_zero:
        low = kth_pair(b, constant_zero + 1)[0]  # min over the decreasing weights
        return low - 1.0 if math.isfinite(low) else beta0
    if target >= constant_zero + n_dec:
        top = kth_pair(b, constant_zero + n_dec)[0]
        return top + 1.0 if math.isfinite(top) else beta0
    below, above = kth_pair(b, target)
    if below == above:  # ties: take the achievable count closest to the wanted one
        larger = b[where_true((b > below) & (log_r < 0))]
        above = larger.min().item() if larger.numel() else below + 1.0
    if math.isinf(below):
        return above - 1.0 if math.isfinite(above) else beta0
    if math.isinf(above):
        return below + 1.0
    return (below + above) / 2.0


def thresholds(log_r: Tensor, log_t: Tensor) -> Tensor:
    """b_i = ln t_i / ln R_i: for ln R < 0 a weight goes to zero iff β > b_i, so the zero count at β
    is #{b < β}. log_r is -0.0 where ln R = 0, so those weights get b = -inf (ln t > 0: zero for
    every β) or +inf (never zero)."""
    return (log_t / log_r).nan_to_num_(nan=math.inf, posinf=math.inf, neginf=-math.inf)


BAND_RULES = ("clip", "reference")
REFERENCE_STEPS = ((40, 0.75), (20, 0.5), (0, 0.1))  # (from iteration, multiplicative β step)
REFERENCE_ITERATIONS = 50


def check_band(band: str) -> None:
    if band not in BAND_RULES:
        raise ValueError(f"band must be one of {', '.join(BAND_RULES)}, got {band!r}")


def skips(zeros_ecq: int, n: int, p: float) -> bool:
    """Whether the official code skips its β search: it runs only while s_ECQ - p > 0."""
    return not (n and zeros_ecq / n - p > 0)


def reference_beta(b: Tensor, beta0: float, s_ecq: float, p: float) -> float:
    """The official code's β search: evaluate the sparsity s at β; while s is outside
    [s_ECQ - p, s_ECQ], β *= 1 + step·sign(s_ECQ - s) (step 0.1, from iteration 20 0.5, from 40
    0.75), then β = min(β, 1); at most 51 evaluations. Returns the last β evaluated."""
    n = b.numel()
    beta = beta0
    for iteration in range(REFERENCE_ITERATIONS + 1):
        tried = beta
        s = int(torch.count_nonzero(b < beta)) / n  # the zero count at β, one pass
        if s_ecq - p <= s <= s_ecq:
            break
        step = next(size for start, size in REFERENCE_STEPS if iteration >= start)
        beta = min(beta * (1.0 + step * math.copysign(1.0, s_ecq - s)), 1.0)  # s != s_ECQ here
    return tried


def start_beta(relevance: Tensor) -> float:
    """β_0 = ln 0.5 / ln mean(R), so that a weight of mean relevance gets R^β = 0.5."""
    mean = relevance.mean().item()
    return math.log(0.5) / math.log(mean) if 0.0 < mean < 1.0 else 1.0
