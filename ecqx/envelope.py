"""Exact argmin of (c_k - w)^2 + pen_k over a few centroids for millions of weights, fast.

Over w, cluster k's cost is a parabola of the same curvature for every k, so the argmin is the lower
envelope of C parabolas: a few clusters, each winning on one interval (:func:`envelope`). Weights
are mapped to fine bins by arithmetic (:class:`Bins`), a small per-layer table gives each bin's
winner, and only weights in bins near an interval boundary, within a proven bound on float
rounding, are resolved one by one (:func:`resolve`). The result equals the direct (C x N) argmin
with ties to the lower index, bit for bit, in the weights' dtype.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

CHUNK_ELEMENTS = 1 << 22  # bound on (clusters x weights) elements materialised at once
MAX_BINS = 1 << 16  # fine bins per layer at most (the lookup tables stay in cache)
BINS_PER_SPACING = 1024  # bins per centroid spacing (fewer weights near a break to resolve)
DIRECT_RESOLVE = 1 << 15  # (weights x clusters) up to which resolve computes every cost directly
SAFETY = 16.0  # factor on the float rounding-error bounds (in units of the dtype's eps)


@dataclass(frozen=True)
class Envelope:
    """Lower envelope over w of the costs (c_k - w)^2 + pen_k of the clusters with finite pen_k.

    members: cluster indices that win, from left to right; breaks: the w (float64) where consecutive
    members cost the same; margin: half-width of a zone around each break outside of which the
    float-rounded costs of weights in ``region`` provably have the same argmin as the exact ones;
    outer_ok: whether that also holds for all weights left / right of the region (far outliers);
    lines: (c_k, a_k, k) of the finite clusters; tol: the cost-rounding bound behind ``margin``.
    """

    members: list[int]
    breaks: list[float]
    margin: float
    lines: list[tuple[float, float, int]]
    tol: float = 0.0
    region: tuple[float, float] = (-math.inf, math.inf)
    outer_ok: tuple[bool, bool] = (True, True)

    def member_at(self, x: float) -> int:
        return self.members[bisect.bisect_left(self.breaks, x)]


def envelope(c: list[float], pen: list[float], dtype: torch.dtype, region, extent) -> Envelope | None:
    """The envelope of the lines a_k - 2 c_k w (a_k = c_k^2 + pen_k, c ascending): cost minus w^2.

    A weight at distance d from every break has a cost gap >= 2·Δ·d to every other cluster
    (Δ: smallest centroid spacing), while rounding moves each cost by at most a few eps of the
    envelope's cost E (the largest in ``region``); ``margin`` = SAFETY·(eps·E + eps64·S + tiny)/(2Δ)
    covers both (S bounds the float64 errors of the break positions). Beyond the region the gap
    grows linearly and E quadratically, so checking the extreme weights (``extent``) suffices.
    None when no cluster has a finite penalty.
    """
    lines = [(ck, ck * ck + pk, k) for k, (ck, pk) in enumerate(zip(c, pen)) if math.isfinite(pk)]
    if not lines:
        return None
    hull: list[tuple[float, float, int]] = []
    for line in lines:
        while len(hull) >= 2 and _hidden(hull[-2], hull[-1], line):
            hull.pop()
        hull.append(line)
    breaks = [(a2 - a1) / (2.0 * (c2 - c1)) for (c1, a1, _), (c2, a2, _) in zip(hull, hull[1:])]
    env = Envelope([k for _, _, k in hull], breaks, 0.0, lines, region=region)
    if not breaks:
        return env
    start, stop = region
    fin, f64 = torch.finfo(dtype), torch.finfo(torch.float64)
    spacing = min(b - a for a, b in zip(c, c[1:]))
    a_top, c_top = max(abs(a) for _, a, _ in hull), max(abs(c[0]), abs(c[-1]))

    def bound(x: float, cost: float) -> float:  # cost-rounding bound for weights up to |x|
        return SAFETY * (fin.eps * cost + f64.eps * (a_top + 2.0 * c_top * abs(x)) + fin.tiny)

    def cost_at(x: float) -> float:
        k = env.member_at(x)
        return (c[k] - x) ** 2 + pen[k]

    reach = max(abs(start), abs(stop), abs(breaks[0]), abs(breaks[-1]))
    points = [start, stop] + [b for b in breaks if start < b < stop]
    tol = bound(reach, max(cost_at(x) for x in points))
    margin = tol / (2.0 * spacing) + SAFETY * f64.eps * reach

    def far_ok(x: float) -> bool:
        gap = min(abs(x - breaks[0]), abs(x - breaks[-1])) - SAFETY * f64.eps * abs(x)
        return start <= x <= stop or 2.0 * spacing * gap > bound(x, cost_at(x))

    outer_ok = (breaks[0] >= start and far_ok(extent[0]), breaks[-1] <= stop and far_ok(extent[1]))
    return Envelope(env.members, breaks, margin, lines, tol, region, outer_ok)


def _hidden(left, mid, right) -> bool:
    """Line ``mid`` is nowhere strictly below both neighbours (its crossings are out of order)."""
    (cl, al, _), (cm, am, _), (cr, ar, _) = left, mid, right
    return (am - al) * (cr - cm) >= (ar - am) * (cm - cl)


class Bins:
    """Weights mapped to fine bins of width h by arithmetic: t = int((w - origin) / h), clamped.

    The bins cover the centroids' range (± 2 spacings, within [min w, max w]) at BINS_PER_SPACING per
    spacing; entry 0 and entry size-1 also take every weight beyond. With h >= 8·eps·|range| the
    computed quotient is within 0.2 of the exact one, so a weight in entry t lies in
    [origin + (t - 0.5)h, origin + (t + 1.5)h) (unbounded on the outer side for the end entries).
    """

    def __init__(self, w: Tensor, lo: float, hi: float, c: list[float]) -> None:
        spacing = min((b - a for a, b in zip(c, c[1:])), default=max(hi - lo, 1.0))
        start, stop = max(lo, c[0] - 2 * spacing), min(hi, c[-1] + 2 * spacing)
        if not start < stop:
            start, stop = lo, hi
        n = min(MAX_BINS, max(256, math.ceil((stop - start) / spacing * BINS_PER_SPACING)))
        h = max((stop - start) / n, 8.0 * torch.finfo(w.dtype).eps * max(abs(start), abs(stop)))
        self.h = h if h > 0 else 1.0
        self.region, self.extent = (start, stop), (lo, hi)
        self.origin = start - 2.0 * self.h
        self.size = n + 6
        inv = 1.0 / self.h
        offset = torch.tensor(-self.origin * inv, dtype=w.dtype, device=w.device)
        self.t = torch.add(offset, w, alpha=inv).clamp_(0, self.size - 1).to(torch.int32)
        self._counts: Tensor | None = None

    def counts(self) -> Tensor:
        """Number of weights per bin entry (int64, shape (size,))."""
        if self._counts is None:
            self._counts = torch.bincount(self.t, minlength=self.size)
        return self._counts

    def table(self, env: Envelope, sentinel: int) -> Tensor:
        """Per entry: the envelope member if no break (± margin) can lie under it, else ``sentinel``.

        Entry t may hold weights in [origin + (t - 0.5)h, origin + (t + 1.5)h), so break b (± margin)
        touches entries (b - margin - origin)/h - 1.5 .. (b + margin - origin)/h + 0.5; one more
        entry on each side absorbs the float64 rounding of these bounds.
        """
        values, lengths, done = [], [], 0
        for i, b in enumerate(env.breaks):
            first = max(done, min(self.size, math.floor((b - env.margin - self.origin) / self.h - 1.5) - 1))
            last = max(first, min(self.size, math.ceil((b + env.margin - self.origin) / self.h + 0.5) + 2))
            values += [env.members[i], sentinel]
            lengths += [first - done, last - first]
            done = last
        values.append(env.members[-1])
        lengths.append(self.size - done)
        table = torch.from_numpy(np.repeat(np.asarray(values, dtype=np.int64), lengths))  # int64 as before
        if not env.outer_ok[0]:
            table[0] = sentinel
        if not env.outer_ok[1]:
            table[-1] = sentinel
        return table

    def envelope(self, c: Tensor, penalty: Tensor) -> Envelope | None:
        return envelope(c.tolist(), penalty.tolist(), c.dtype, self.region, self.extent)

    def lookup(self, table: Tensor) -> Tensor:
        return table.to(self.t.device).index_select(0, self.t)


def index_dtype(num_centroids: int) -> tuple[torch.dtype, int]:
    """Small integer dtype for centroid indices plus a sentinel value it can hold."""
    return (torch.uint8, 255) if num_centroids < 255 else (torch.int16, -1)


def where_true(mask: Tensor) -> Tensor:
    """``mask.nonzero()`` of a flat bool mask, fast when few are set: 8 flags at a time first."""
    n = mask.numel()
    n8 = n - n % 8
    words = mask[:n8].view(torch.int64).nonzero().reshape(-1)
    if words.numel() > n8 // 64:
        return mask.nonzero().reshape(-1)
    pos = mask[:n8].view(-1, 8)[words].nonzero()
    found = words[pos[:, 0]] * 8 + pos[:, 1]
    return torch.cat([found, mask[n8:].nonzero().reshape(-1) + n8]) if n8 < n else found


def choose(zero: Tensor, j: Tensor, zero_index: int) -> Tensor:
    """``where(zero, zero_index, j)`` by wrap-around integer arithmetic (``where`` is slow on CPU)."""
    flag = zero.view(torch.uint8) if j.dtype == torch.uint8 else zero.to(j.dtype)
    return j - (j - zero_index) * flag


def resolve(w: Tensor, env: Envelope, c: Tensor, penalty: Tensor) -> tuple[Tensor, Tensor]:
    """(min cost, argmin) over the clusters for a few weights: envelope member unless within the
    margin of a break, where the direct argmin decides. A few weights take the direct argmin over
    all clusters at once (fewer small operations; the same numbers)."""
    if w.numel() * c.numel() <= DIRECT_RESOLVE:
        return direct_min(w, c, penalty)
    breaks = torch.tensor(env.breaks, dtype=torch.float64, device=w.device)
    x = w.to(torch.float64)
    pos = torch.searchsorted(breaks, x)
    idx = torch.tensor(env.members, device=w.device)[pos]
    cost = (c[idx] - w) ** 2 + penalty[idx]
    if not breaks.numel():
        return cost, idx
    gap_lo = (x - breaks[(pos - 1).clamp(min=0)]).abs()
    gap_hi = (breaks[pos.clamp(max=breaks.numel() - 1)] - x).abs()
    near = ~(torch.minimum(gap_lo, gap_hi) > env.margin)  # NaN-safe
    far = torch.zeros_like(near)
    if not env.outer_ok[0]:
        far |= x < env.region[0]
    if not env.outer_ok[1]:
        far |= x > env.region[1]
    far = far.nonzero().reshape(-1)
    if far.numel():  # far outliers whose rounding is not covered by the margin
        cost[far], idx[far] = direct_min(w[far], c, penalty)
        near[far] = False
    sub = near.nonzero().reshape(-1)
    if sub.numel():
        nearest_break = torch.where(gap_lo[sub] <= gap_hi[sub], pos[sub] - 1, pos[sub]).clamp_(0, breaks.numel() - 1)
        cand = break_candidates(env, breaks)
        if cand is None:
            cost[sub], idx[sub] = direct_min(w[sub], c, penalty)
        else:
            cand = cand.to(w.device)[nearest_break]  # (weights, K) ascending cluster indices
            costs = (c[cand] - w[sub][:, None]) ** 2 + penalty[cand]
            cost[sub], best = costs.min(dim=1)  # first minimum: the lowest cluster index
            idx[sub] = cand.gather(1, best[:, None]).reshape(-1)
    return cost, idx


def break_candidates(env: Envelope, breaks: Tensor) -> Tensor | None:
    """Per break: the clusters that may be the float argmin of a weight within ``margin`` of it,
    (breaks, K) ascending and padded with the first; None when breaks lie too close together.

    A cluster whose exact cost at the break exceeds the envelope by more than the rounding bound
    plus what 2·(c range)·margin of movement can change is never the float argmin there."""
    breaks = breaks.cpu()
    if breaks.numel() > 1 and bool(((breaks[1:] - breaks[:-1]) <= 2 * env.margin).any()):
        return None
    c = torch.tensor([ck for ck, _, _ in env.lines], dtype=torch.float64)
    a = torch.tensor([ak for _, ak, _ in env.lines], dtype=torch.float64)
    index = torch.tensor([k for _, _, k in env.lines])
    lines = a[None, :] - 2.0 * c[None, :] * breaks[:, None]  # cost - w^2 at each break
    gap = lines - lines.min(dim=1, keepdim=True).values
    slack = (
        env.tol
        + 2.0 * float(c[-1] - c[0]) * env.margin
        + SAFETY * torch.finfo(torch.float64).eps * float(a.abs().max() + 2 * c.abs().max() * breaks.abs().max())
    )
    keep = gap <= slack
    order = torch.where(keep, index[None, :], torch.iinfo(torch.int64).max).sort(dim=1).values
    width = int(keep.sum(dim=1).max())
    order = order[:, :width]
    return torch.where(order == torch.iinfo(torch.int64).max, order[:, :1], order)


def direct_min(w: Tensor, c: Tensor, penalty: Tensor) -> tuple[Tensor, Tensor]:
    """min over k of (c_k - w)^2 + penalty_k and its first argmin, chunked (C x chunk) at a time."""
    m = torch.empty_like(w)
    j = torch.empty(w.numel(), dtype=torch.long, device=w.device)
    for sl in chunks(w.numel(), c.numel()):
        cost = (c[:, None] - w[None, sl]) ** 2 + penalty[:, None]
        m[sl], j[sl] = cost.min(dim=0)
    return m, j


def table_argmin(bins: Bins, w: Tensor, c: Tensor, penalty: Tensor, env: Envelope, target: int = -1):
    """First argmin over k of (c_k - w)^2 + penalty_k for every weight (small int dtype), and how
    many weights have ``target`` as argmin (from the bin counts)."""
    dtype, sentinel = index_dtype(c.numel())
    table = bins.table(env, sentinel)
    idx = bins.lookup(table.to(dtype))
    unsafe = where_true(idx == sentinel)
    count = int(bins.counts()[table.to(bins.t.device) == target].sum()) if target >= 0 else 0
    if unsafe.numel():
        resolved = resolve(w[unsafe], env, c, penalty)[1]
        idx[unsafe] = resolved.to(dtype)
        count += int(torch.count_nonzero(resolved == target))
    return idx, count


def count_argmin(bins: Bins, w: Tensor, c: Tensor, penalty: Tensor, env: Envelope, target: int) -> int:
    """How many weights have ``target`` as first argmin, from the bin counts (weights of unsafe
    bins resolved one by one)."""
    table = bins.table(env, -1).to(bins.t.device)
    count = int(bins.counts()[table == target].sum())
    unsafe = where_true((table == -1).index_select(0, bins.t))
    if unsafe.numel():
        count += int(torch.count_nonzero(resolve(w[unsafe], env, c, penalty)[1] == target))
    return count


# -- nearest neighbour, P_c, λ_max ----------------------------------------------------------------
def chunks(n: int, num_centroids: int):
    size = max(1, CHUNK_ELEMENTS // max(num_centroids, 1))
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))
