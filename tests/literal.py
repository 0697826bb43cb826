"""Slow, literal float64 re-implementations of the paper's equations, used as test oracles."""

from __future__ import annotations

import math

import numpy as np
import torch


def literal_codebook(w: np.ndarray, bits: int) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64).ravel()
    if (w < 0).sum() == 0:
        step = np.percentile(np.abs(w), 99.9) / (2**bits - 1) or np.abs(w).max() / (2**bits - 1) or 1.0
        return np.arange(0, 2**bits) * step
    step = np.percentile(np.abs(w), 99.9) / (2 ** (bits - 1) - 1) or np.abs(w).max() / (2 ** (bits - 1) - 1)
    pos, neg = w[w > 0], -w[w < 0]
    votes = 0
    votes += 1 if pos.max() > neg.max() else -1
    votes += 1 if pos.mean() > neg.mean() else -1
    votes += 1 if len(pos) > len(neg) else -1
    votes += 1 if pos.sum() > neg.sum() else -1
    votes += 1 if pos.std(ddof=1) > neg.std(ddof=1) else -1
    half = 2 ** (bits - 1)
    ks = np.arange(-half + 1, half + 1) if votes > 0 else np.arange(-half, half)
    return ks * step


def literal_distances(w: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(C, N) squared distances."""
    return (c[:, None] - w.ravel()[None, :]) ** 2


def literal_pmf(w: np.ndarray, c: np.ndarray, rule: str = "exact") -> np.ndarray:
    z = int(np.where(c == 0)[0][0])
    nn = np.argmin(literal_distances(w, c), axis=0)
    pmf = np.array([np.sum(nn == k) for k in range(len(c))], dtype=np.float64) / nn.size
    if pmf[z] < 0.5 and rule == "exact":
        nonzero = sum(pmf[k] for k in range(len(c)) if k != z)
        for k in range(len(c)):
            if k != z:
                pmf[k] = pmf[k] * 0.5 / nonzero
        pmf[z] = 0.5
    elif pmf[z] < 0.5:  # the official get_pmf: its loop runs over the non-empty clusters, zero included
        present = [k for k in range(len(c)) if pmf[k] > 0 or k == z]
        nonzero_sum = sum(pmf[k] for k in present if k != z)
        for k in present:
            pmf[k] -= (pmf[k] / nonzero_sum) * (0.5 - pmf[z])
        pmf[z] = 0.5
    return pmf


def literal_lambda_max(w: np.ndarray, c: np.ndarray, rule: str, pmf_rule: str = "exact") -> float:
    z = int(np.where(c == 0)[0][0])
    pmf = literal_pmf(w, c, pmf_rule)
    with np.errstate(divide="ignore"):
        info = -np.log2(pmf)
    vals = []
    for w_ext in (w.min(), w.max()):
        k = int(np.argmin((c - w_ext) ** 2))
        gain = info[k] - info[z]
        if k == z or not gain > 0 or math.isinf(gain):
            continue
        if rule == "thesis":
            vals.append((w_ext**2 - (w_ext - c[k]) ** 2) / gain)
        else:
            vals.append(((c[k] - w_ext) ** 2 - (0 - w_ext)) ** 2 / gain)
    if not vals:
        return 0.0
    return min(vals) if rule == "thesis" else max(vals)


def literal_cost(w, c, Lambda, share, rule="thesis", pmf_rule="exact") -> tuple[np.ndarray, float]:
    """(C, N) ECQ cost and the λ_l used."""
    w = np.asarray(w, dtype=np.float64).ravel()
    pmf = literal_pmf(w, c, pmf_rule)
    with np.errstate(divide="ignore"):
        info = -np.log2(pmf)
    lam = 0.0 if Lambda == 0 else Lambda * (share + 0.05) / 1.05 * literal_lambda_max(w, c, rule, pmf_rule)
    with np.errstate(invalid="ignore"):
        penalty = np.where(pmf > 0, lam * info, np.inf)
    return literal_distances(w, c) + penalty[:, None], lam


def literal_ecq(w, c, Lambda, share, rule="thesis", pmf_rule="exact") -> np.ndarray:
    cost, _ = literal_cost(w, c, Lambda, share, rule, pmf_rule)
    return np.argmin(cost, axis=0)


def literal_reference_ecqx(w, c, Lambda, share, relevance, p=0.1, rho=2.0, rule="reference", pmf_rule="reference"):
    """The official apply_entropy_constraint's β search, literally: (indices, β or None)."""
    cost, _ = literal_cost(w, c, Lambda, share, rule, pmf_rule)
    z = int(np.where(c == 0)[0][0])
    s_ent = float(np.mean(np.argmin(cost, axis=0) == z))
    r = np.asarray(relevance, dtype=np.float64).ravel()
    beta, s_lrp, iteration, out, used = math.log(0.5) / math.log(r.mean()), 0.0, 0, cost, None
    while s_lrp > s_ent or s_lrp < s_ent - p:
        trial = cost.copy()
        trial[z] = trial[z] * (rho * (r + 1e-12) ** beta)
        s_lrp, out, used = float(np.mean(np.argmin(trial, axis=0) == z)), trial, beta
        step = 0.75 if iteration >= 40 else 0.5 if iteration >= 20 else 0.1
        beta = min(beta * (1 + step * np.sign(s_ent - s_lrp)), 1)
        if iteration >= 50:
            break
        iteration += 1
    return np.argmin(out, axis=0), used


def literal_ecqx(w, c, Lambda, share, relevance, beta, rho=2.0, rule="thesis") -> np.ndarray:
    cost, _ = literal_cost(w, c, Lambda, share, rule)
    z = int(np.where(c == 0)[0][0])
    r = np.asarray(relevance, dtype=np.float64).ravel()
    cost[z] = cost[z] * (rho * (r + 1e-12) ** beta)
    return np.argmin(cost, axis=0)


def as_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()
