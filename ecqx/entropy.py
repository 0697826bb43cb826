"""The entropy constraint's ingredients: cluster probabilities, information content, λ_max, layer decay.

Becking et al. 2022, eq. 4-6: the cost of putting weight w in cluster c is (w - w_c)^2 + λ_l · I_c with

    P_c  = share of the layer's weights whose nearest centroid is c, P_0 raised to at least 0.5
    I_c  = -log2 P_c                                  (bits; +inf for an empty cluster)
    λ_l  = Λ · δ_l · λ_max,l,   δ_l = (N_l/N_max + 0.05) / 1.05

Units: probabilities are fractions, information in bits, λ in (weight units)^2 per bit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

P0_MIN = 0.5  # P_0 is raised to at least this, so zero is always cheapest in information
SUSTAIN = 0.05  # δ_l = (N_l/N_max + SUSTAIN) / (1 + SUSTAIN)
LAMBDA_MAX_RULES = ("thesis", "reference")
PMF_RULES = ("exact", "reference")


def layer_decay(layer_share: float) -> float:
    """δ_l = (N_l/N_max + 0.05)/1.05 for ``layer_share`` = N_l/N_max in (0, 1]."""
    return (layer_share + SUSTAIN) / (1.0 + SUSTAIN)


def pmf_from_counts(counts: Tensor, n: int, zero_index: int, rule: str = "exact") -> Tensor:
    """P_c (float64, shape (C,)) from the nearest-neighbour histogram ``counts`` of ``n`` weights,
    with P_0 raised to 0.5 when it is below.

    exact:     the non-zero clusters are rescaled by 0.5 / (1 - P_0).
    reference: the official code's loop over the non-empty clusters in ascending order,
               P_i -= P_i / (1 - P_0) · (0.5 - P_0), which also runs for i = 0 and reads P_0 as
               already changed there: clusters after zero lose more than an exact rescale.
    """
    pmf = counts.to(torch.float64) / max(n, 1)
    if pmf[zero_index] >= P0_MIN:
        return pmf
    nonzero_mass = 1.0 - pmf[zero_index].item()
    if nonzero_mass <= 0:
        return pmf
    if rule == "exact":
        pmf = pmf * (P0_MIN / nonzero_mass)
    else:
        check_pmf_rule(rule)
        p = pmf.tolist()
        for i in [i for i, c in enumerate(counts.tolist()) if c > 0 or i == zero_index]:
            p[i] -= p[i] / nonzero_mass * (P0_MIN - p[zero_index])  # p[zero_index] as changed so far
        pmf = torch.tensor(p, dtype=torch.float64, device=counts.device)
    pmf[zero_index] = P0_MIN
    return pmf


def check_pmf_rule(rule: str) -> None:
    if rule not in PMF_RULES:
        raise ValueError(f"pmf must be one of {', '.join(PMF_RULES)}, got {rule!r}")


def probabilities(nearest: Tensor, num_centroids: int, zero_index: int, rule: str = "exact") -> Tensor:
    """P_c (float64, shape (C,)) from the nearest-centroid index of every weight (P_0 >= 0.5)."""
    counts = torch.bincount(nearest.reshape(-1), minlength=num_centroids)
    return pmf_from_counts(counts, nearest.numel(), zero_index, rule)


def information_content(pmf: Tensor) -> Tensor:
    """I_c = -log2 P_c in bits (inf for empty clusters)."""
    return -torch.log2(pmf)


def check_lambda_max_rule(rule: str) -> None:
    if rule not in LAMBDA_MAX_RULES:
        raise ValueError(f"lambda_max_rule must be one of {', '.join(LAMBDA_MAX_RULES)}, got {rule!r}")


def lambda_max(weight: Tensor, centroids: Tensor, info: Tensor, zero_index: int, rule: str = "thesis") -> float:
    """λ at which the extreme weight of a side would move to the zero cluster.

    thesis:    [w_ext^2 - (w_ext - c_ext)^2] / (I_ext - I_0), the smaller of the two sides.
    reference: [(c_ext - w_ext)^2 - (0 - w_ext)]^2 / (I_ext - I_0), the larger side (official code).
    A side counts only if it has a weight whose nearest centroid is not zero and I_ext > I_0;
    with no such side λ_max is 0.
    """
    check_lambda_max_rule(rule)
    w = weight.reshape(-1)
    if w.numel() == 0:
        return 0.0
    extremes = [float(v) for v in torch.aminmax(w)]
    return lambda_max_of_extremes(extremes, centroids.to(torch.float64).tolist(), info.tolist(), zero_index, rule)


def lambda_max_of_extremes(
    extremes: list[float], c: list[float], info: list[float], zero_index: int, rule: str
) -> float:
    """:func:`lambda_max` from the extreme weights, in float64 (Python floats: no tensor ops)."""
    values = []
    for w_ext in extremes:
        k = min(range(len(c)), key=lambda i: ((c[i] - w_ext) ** 2, i))  # nearest, ties to the lower
        gain = info[k] - info[zero_index]
        if k == zero_index or not gain > 0 or math.isinf(gain):
            continue
        if rule == "thesis":
            values.append((w_ext**2 - (w_ext - c[k]) ** 2) / gain)
        else:
            values.append(((c[k] - w_ext) ** 2 - (0 - w_ext)) ** 2 / gain)
    if not values:
        return 0.0
    return min(values) if rule == "thesis" else max(values)
