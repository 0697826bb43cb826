"""The fidelity study's grid and its report maths, on configs and synthetic runs (no training)."""

import numpy as np
import pandas as pd
import pytest

from benchmarks import fidelity
from benchmarks.fidelity_report import binned, gaps, switch_effects
from ecqx.profiles import SWITCHES


def test_variants_flip_one_switch_at_a_time_from_each_profile():
    for method, n in (("ecq", 3), ("ecqx", 7)):
        v = fidelity.variants(method)
        assert len(v) == 2 + 2 * n and len(fidelity.switches_of(method)) == n
        assert all(len(x) <= 2 for x in v), "a profile and at most one switch"


def test_study_configs_are_unique_and_label_back_to_their_variant():
    cfgs = fidelity.study_configs(quick=True)
    labels = {(c.method, *fidelity.variant_of(c.params)) for c in cfgs}
    assert ("ecqx", "reference", "relevance_model") in labels and ("ecq", "clean", "-") in labels
    assert ("ecqx", "clean", "lambda_max_rule+relevance_model") in labels, "the 2-bit question's extra run"
    keys = [fidelity.stable_hash(fidelity.identity_fields(c)) for c in cfgs]
    assert len(keys) == len(set(keys))
    assert all(c.suite == fidelity.STUDY and c.model.name == "mlp_bn" for c in cfgs)


def synthetic_runs() -> pd.DataFrame:
    """ECQ and ECQx at two points and two seeds; ECQx leads by 0.3 under reference, 0 under clean;
    flipping ``ste`` in the reference profile costs ECQx 0.2 and ECQ nothing."""
    rows = []
    for method in ("ecq", "ecqx"):
        for profile in ("clean", "reference"):
            for switch in ["-", *[s for s in SWITCHES if method == "ecqx" or s in ("ste", "pmf", "lambda_max_rule")]]:
                for bits, lam in ((4, 0.4), (2, 0.8)):
                    for seed in (0, 1):
                        acc = 0.6 + (0.3 if method == "ecqx" and profile == "reference" else 0.0)
                        if profile == "reference" and switch == "ste" and method == "ecqx":
                            acc -= 0.2
                        hist = [
                            {"epoch": e, "test_accuracy": acc, "sparsity": 0.82 + 0.1 * (method == "ecqx")}
                            for e in range(1, 6)
                        ]
                        rows.append(
                            dict(
                                method=method,
                                profile=profile,
                                switch=switch,
                                bits=bits,
                                Lambda=lam,
                                seed=seed,
                                last5_accuracy=acc,
                                last5_sparsity=0.8,
                                history=hist,
                            )
                        )
    return pd.DataFrame(rows)


def test_switch_effects_pair_runs_by_point_and_seed():
    fx = switch_effects(synthetic_runs()).set_index(["method", "switch"])
    assert fx.loc[("ecqx", "ste"), "d_accuracy_to_clean"] == pytest.approx(-0.2)
    assert fx.loc[("ecq", "ste"), "d_accuracy_to_clean"] == pytest.approx(0.0)
    assert fx.loc[("ecqx", "ste"), "pairs_to_clean"] == 4


def test_gaps_measure_the_ecqx_lead_and_its_change_per_switch():
    g = gaps(synthetic_runs()).set_index(["profile", "switch"])
    assert g.loc[("reference", "-"), "ecqx_lead"] == pytest.approx(0.3)
    assert g.loc[("clean", "-"), "ecqx_lead"] == pytest.approx(0.0)
    assert g.loc[("reference", "ste"), "change"] == pytest.approx(-0.2)
    assert g.loc[("reference", "band"), "change"] == pytest.approx(0.0), "an ECQx-only switch: ECQ stays at the base"


def test_binned_accuracy_by_sparsity():
    b = binned(synthetic_runs()).set_index(["profile", "bin"])
    assert b.loc[("reference", "0.80–0.85"), "ecq_accuracy"] == pytest.approx(0.6)
    assert b.loc[("reference", "0.90–0.95"), "ecqx_accuracy"] == pytest.approx(0.9)
    assert np.isnan(b.loc[("reference", "0.90–0.95"), "ecqx_minus_ecq"])
