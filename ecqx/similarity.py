"""Similarity of two sets of relevance maps (one row per explained example, one column per input
position), and the share of changed predictions. Pure maths on tensors; float64 inside.

For maps A, B of shape (P, D) (row p: the map of pair p under the reference and the compared model):

- Spearman:  ρ = (1/P) Σ_p pearson(rank(A_p), rank(B_p)), ranks averaged over ties (1..D);
  pearson(u, v) = Σ (u - ū)(v - v̄) / sqrt(Σ (u - ū)² · Σ (v - v̄)²).
- cosine:    c = (1/P) Σ_p <A_p, B_p> / sqrt(|A_p|² · |B_p|²).
- top-k:     o = (1/P) Σ_p |T_k(A_p) ∩ T_k(B_p)| / k, T_k = the k positions of largest relevance,
  k = ceil(share · D) (share 0.1 by default, at least 1).
- flip:      f = (1/N) Σ_n [argmax y_ref(x_n) ≠ argmax y_cmp(x_n)] over the N examples.

A row that is constant in one map and not in the other has no correlation: it counts 0; two
constant rows count 1 (the same ordering). Likewise a zero row in one map gives cosine 0, in both 1.
Identical maps give exactly 1 on every row (ρ, c, o) and f = 0.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

TOPK_SHARE = 0.1  # k of the top-k overlap as a share of the input positions


def average_ranks(row: Tensor) -> Tensor:
    """Ranks 1..D of a 1-D tensor, ties given the mean of the ranks they span (float64)."""
    values, inverse, counts = torch.unique(row, sorted=True, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()  # the last rank of each distinct value
    return (ends - (counts.double() - 1) / 2)[inverse]


def _pearson(u: Tensor, v: Tensor) -> float:
    du, dv = u - u.mean(), v - v.mean()
    su, sv = float((du * du).sum()), float((dv * dv).sum())
    if su == 0 or sv == 0:
        return 1.0 if su == sv else 0.0
    # cov / sqrt(su·sv): identical inputs give su / sqrt(su²) = 1 exactly in IEEE arithmetic
    return max(-1.0, min(1.0, float((du * dv).sum()) / math.sqrt(su * sv)))


def spearman(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation per row of (P, D) maps: shape (P,), float64, in [-1, 1]."""
    _check(a, b)
    rows = [_pearson(average_ranks(x), average_ranks(y)) for x, y in zip(a.double(), b.double())]
    return torch.tensor(rows, dtype=torch.float64)


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity per row of (P, D) maps: shape (P,), float64, in [-1, 1]."""
    _check(a, b)
    a, b = a.double(), b.double()
    na, nb, dot = (a * a).sum(1), (b * b).sum(1), (a * b).sum(1)
    both = na * nb
    out = dot / both.clamp_min(torch.finfo(torch.float64).tiny).sqrt()
    out = torch.where(both > 0, out, (na == nb).double())  # zero rows: 1 if both are zero, else 0
    return out.clamp(-1.0, 1.0)


def topk_count(positions: int, share: float = TOPK_SHARE) -> int:
    """k = ceil(share · positions), at least 1."""
    return max(1, math.ceil(share * positions - 1e-9))


def topk_overlap(a: Tensor, b: Tensor, share: float = TOPK_SHARE) -> Tensor:
    """|T_k(A_p) ∩ T_k(B_p)| / k per row: shape (P,), float64, in [0, 1]. Ties at the k-th value
    are broken by position (the same for both maps), so identical rows overlap fully."""
    _check(a, b)
    k = topk_count(a.shape[1], share)
    ta = _topk_mask(a, k)
    tb = _topk_mask(b, k)
    return (ta & tb).sum(1).double() / k


def _topk_mask(a: Tensor, k: int) -> Tensor:
    # stable descending order: equal values keep position order
    order = torch.sort(a.double(), dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(a, dtype=torch.bool).scatter_(1, order, True)


def flip_share(reference: Tensor, compared: Tensor) -> float:
    """Share of examples whose top-1 class differs between two predictions of shape (N,)."""
    if reference.shape != compared.shape or reference.numel() == 0:
        raise ValueError(
            f"predictions must have one equal, non-empty shape, got {reference.shape} and {compared.shape}"
        )
    return float((reference != compared).double().mean())


def _check(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape or a.dim() != 2 or a.shape[1] == 0:
        raise ValueError(
            f"maps must have one equal shape (pairs, positions), got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def map_similarity(a: Tensor, b: Tensor, share: float = TOPK_SHARE) -> dict[str, float]:
    """The means over rows of :func:`spearman`, :func:`cosine` and :func:`topk_overlap`:
    ``{"spearman", "cosine", "topk"}`` (NaN for no rows)."""
    if len(a) == 0:
        return {"spearman": float("nan"), "cosine": float("nan"), "topk": float("nan")}
    return {
        "spearman": float(spearman(a, b).mean()),
        "cosine": float(cosine(a, b).mean()),
        "topk": float(topk_overlap(a, b, share).mean()),
    }
