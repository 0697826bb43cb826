"""The fidelity switches (ecqx.profiles) against literal versions of the official code's behaviour,
on tiny tensors; and ``profile`` resolving to the documented values."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

import baselines  # noqa: F401  (registers ecq)
from benchmarks.config import make_run_config, run_key
from ecqx import METHODS, assign_layer, codebook
from ecqx.entropy import pmf_from_counts
from ecqx.profiles import SWITCHES
from ecqx.relevance import start_relevance
from tests.literal import as_np, literal_ecq, literal_reference_ecqx


def weights(seed: int, n: int = 3000) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g, dtype=torch.float64) * 0.05
    w[torch.randperm(n, generator=g)[: n // 50]] *= 5.0
    return w


# ------------------------------------------------------------------ pmf


def test_reference_pmf_rescale_reads_the_changed_p0():
    counts = torch.tensor([100, 300, 400, 0, 200])  # zero cluster at index 2, P_0 = 0.4 < 0.5
    exact = pmf_from_counts(counts, 1000, 2, "exact")
    ref = pmf_from_counts(counts, 1000, 2, "reference")
    # literal: loop over non-empty clusters in order; at i = 0 (zero) P_0 itself shrinks first
    p, nz = [0.1, 0.3, 0.4, 0.0, 0.2], 0.6
    for i in (0, 1, 2, 4):
        p[i] -= p[i] / nz * (0.5 - p[2])
    p[2] = 0.5
    assert ref.tolist() == pytest.approx(p, abs=1e-15)
    assert ref[:2].tolist() == pytest.approx(exact[:2].tolist(), abs=1e-15), "clusters before zero: exact"
    assert ref[4] < exact[4] and exact[4] == pytest.approx(0.2 * 0.5 / 0.6), "after zero: less than exact"
    assert ref[3] == 0 and ref.sum() < 1.0
    full = torch.tensor([100, 600, 300])
    assert torch.equal(pmf_from_counts(full, 1000, 1, "reference"), pmf_from_counts(full, 1000, 1, "exact"))


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("Lambda", [0.2, 0.8])
def test_reference_pmf_and_lambda_max_match_the_literal_official_ecq(bits, Lambda):
    w = weights(bits * 10 + int(Lambda * 10))
    c = codebook(w, bits).double()
    got = assign_layer(w, c, Lambda, 0.7, lambda_max_rule="reference", pmf="reference").indices
    want = literal_ecq(as_np(w), as_np(c), Lambda, 0.7, "reference", "reference")
    assert np.array_equal(got.numpy(), want)


def test_the_pmf_switch_changes_the_assignment_when_p0_is_below_one_half():
    w = torch.rand(4000, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    c = codebook(w, 4).double()
    ref = assign_layer(w, c, 0.5, 1.0, lambda_max_rule="reference", pmf="reference")
    want = literal_ecq(as_np(w), as_np(c), 0.5, 1.0, "reference", "reference")
    assert np.array_equal(ref.indices.numpy(), want)
    exact = assign_layer(w, c, 0.5, 1.0, lambda_max_rule="reference", pmf="exact")
    assert ref.ecq_sparsity > exact.ecq_sparsity, "less probability after zero: dearer non-zero clusters"


# ------------------------------------------------------------------ β search (band)


@pytest.mark.parametrize(("bits", "Lambda", "p"), [(2, 0.4, 0.1), (4, 0.4, 0.1), (4, 0.8, 0.05), (3, 0.2, 0.3)])
def test_reference_band_is_the_official_beta_search(bits, Lambda, p):
    w = weights(7 + bits)
    c = codebook(w, bits).double()
    g = torch.Generator().manual_seed(bits)
    r = (w.abs() * torch.rand(w.shape, generator=g, dtype=torch.float64)) ** 2
    r = r / r.max()
    a = assign_layer(w, c, Lambda, 1.0, r, p, 2.0, "reference", pmf="reference", band="reference")
    want, beta = literal_reference_ecqx(as_np(w), as_np(c), Lambda, 1.0, as_np(r), p)
    assert np.array_equal(a.indices.numpy(), want)
    assert (a.beta is None) == (beta is None) and (beta is None or a.beta == pytest.approx(beta, rel=1e-12))


def test_reference_band_skips_the_search_when_ecq_sparsity_is_at_most_p():
    w = weights(3)
    c = codebook(w, 4).double()
    r = torch.rand(w.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ecq = assign_layer(w, c, 0.01, 1.0, lambda_max_rule="reference")
    p = ecq.ecq_sparsity + 0.01  # s_ECQ <= p
    a = assign_layer(w, c, 0.01, 1.0, r, p=p, lambda_max_rule="reference", band="reference")
    assert a.beta is None and torch.equal(a.indices, ecq.indices), "relevance has no effect"
    clipped = assign_layer(w, c, 0.01, 1.0, r, p=p, lambda_max_rule="reference", band="clip")
    assert clipped.beta is not None


# ------------------------------------------------------------------ STE


def two_layer_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


@pytest.mark.parametrize("ste", ["centroid_signed", "centroid_magnitude"])
def test_centroid_ste_steps_a_second_adam_with_the_gradient_times_the_centroid(ste):
    model = two_layer_net()
    method = METHODS.get("ecq")(METHODS.get("ecq").Config(bits=2, Lambda=0.2, ste=ste))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    method.prepare(model, total_steps=1, optimizer=opt)
    latent = {k: v.clone() for k, v in method.latent.items()}
    quantized = {k: m.weight.detach().clone() for k, m in method.layers.items()}
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {k: m.weight.grad.clone() for k, m in method.layers.items()}
    opt.step()
    method.after_step(model, (x, y))
    for name, q in quantized.items():
        scale = torch.where(q != 0, q if ste == "centroid_signed" else q.abs(), torch.ones_like(q))
        g = grads[name] * scale
        # Adam's first step, literally: m̂ = g, v̂ = g², update = lr · m̂ / (√v̂ + eps)
        want = latent[name] - 0.01 * g / (g.abs() + 1e-8)
        torch.testing.assert_close(method.latent[name], want, rtol=0, atol=1e-7)
        if ste == "centroid_signed":
            neg = (q < 0) & (grads[name].abs() > 1e-6)
            assert torch.all(torch.sign(method.latent[name] - latent[name])[neg] == torch.sign(grads[name])[neg]), (
                "at a negative centroid the latent moves along +grad"
            )


def test_centroid_ste_needs_the_optimizer_and_follows_its_learning_rate():
    model = two_layer_net()
    method = METHODS.get("ecq")(METHODS.get("ecq").Config(ste="centroid_signed"))
    with pytest.raises(ValueError, match="needs the training optimizer"):
        method.prepare(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    method = METHODS.get("ecq")(METHODS.get("ecq").Config(ste="centroid_signed"))
    method.prepare(model, optimizer=opt)
    assert isinstance(method.ste.optimizer, torch.optim.SGD)
    assert all(g["momentum"] == 0.9 and g["lr"] == 0.5 for g in method.ste.optimizer.param_groups)
    opt.param_groups[0]["lr"] = 0.25
    nn.functional.cross_entropy(model(torch.randn(4, 6)), torch.tensor([0, 1, 2, 0])).backward()
    method.after_step(model, None)
    assert all(g["lr"] == 0.25 for g in method.ste.optimizer.param_groups)


# ------------------------------------------------------------------ relevance switches


class Recorder:
    """Stands in for the LRP engine: records the weights it sees, returns all-ones relevances."""

    def __init__(self):
        self.seen = []

    def __call__(self, model, x, y, layers, fold=None):
        self.seen.append({k: m.weight.detach().clone() for k, m in layers.items()})
        return deliver({k: torch.ones_like(m.weight) for k, m in layers.items()}, fold)


def deliver(relevances: dict, fold) -> dict:
    """What the LRP engine does with its relevances: each to ``fold`` (nothing returned), or returned."""
    if fold is None:
        return relevances
    for name, r in relevances.items():
        fold(name, r)
    return {}


@pytest.mark.parametrize("model_choice", ["quantized", "stepped"])
def test_relevance_model_choice(model_choice):
    model = two_layer_net()
    cfg = METHODS.get("ecqx").Config(bits=2, relevance_model=model_choice)
    method = METHODS.get("ecqx")(cfg)
    method._lrp = Recorder()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    method.prepare(model, optimizer=opt)
    quantized = {k: m.weight.detach().clone() for k, m in method.layers.items()}
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    stepped = {k: m.weight.detach().clone() for k, m in method.layers.items()}
    method.after_step(model, (x, y))
    seen = method._lrp.seen[0]
    for name in quantized:
        want = quantized[name] if model_choice == "quantized" else stepped[name]
        assert torch.equal(seen[name], want)
    assert not torch.equal(quantized["0.weight"], stepped["0.weight"])


def constant_relevance(value: float):
    """An LRP engine stand-in whose relevance is ``value`` everywhere."""

    def engine(model, x, y, layers, fold=None):
        return deliver({k: torch.full_like(m.weight, value) for k, m in layers.items()}, fold)

    return engine


@pytest.mark.parametrize("reset", ["never", "epoch"])
def test_relevance_ema_reset(reset):
    model = two_layer_net()
    method = METHODS.get("ecqx")(METHODS.get("ecqx").Config(bits=2, alpha=0.5, relevance_ema_reset=reset))
    method.prepare(model)
    batch = (torch.zeros(1, 6), torch.zeros(1, dtype=torch.long))
    method.start_epoch(1)
    method.step, method._lrp = 1, constant_relevance(1.0)
    method.update_relevance(model, batch)
    method.start_epoch(2)
    method.step, method._lrp = 2, constant_relevance(3.0)
    method.update_relevance(model, batch)
    want = 3.0 if reset == "epoch" else 0.5 * 1.0 + 0.5 * 3.0  # R = α·R_prev + (1-α)·R_new
    assert torch.all(method.relevance["0.weight"] == want)


def test_batch_mean_start_relevance_divides_by_the_batch_size():
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    target = torch.tensor([2, 0])
    logit = start_relevance(logits, target)
    assert torch.equal(logit, torch.tensor([[0.0, 0.0, 3.0], [4.0, 0.0, 0.0]]))
    assert torch.equal(start_relevance(logits, target, "batch_mean"), logit / 2)


# ------------------------------------------------------------------ profiles


def test_profile_reference_resolves_to_the_documented_values_and_explicit_fields_win():
    cfg = METHODS.get("ecqx").Config(profile="reference")
    assert {k: getattr(cfg, k) for k in SWITCHES} == {k: v["reference"] for k, v in SWITCHES.items()}
    assert cfg.ste == "centroid_signed" and cfg.pmf == "reference" and cfg.band == "reference"
    clean = METHODS.get("ecqx").Config()
    assert {k: getattr(clean, k) for k in SWITCHES} == {k: v["clean"] for k, v in SWITCHES.items()}
    mixed = METHODS.get("ecqx").Config(profile="reference", ste="identity")
    assert mixed.ste == "identity" and mixed.pmf == "reference"
    ecq = METHODS.get("ecq").Config(profile="reference")
    assert (ecq.ste, ecq.pmf, ecq.lambda_max_rule) == ("centroid_signed", "reference", "reference")
    assert not hasattr(ecq, "band")
    with pytest.raises(ValueError, match="profile must be one of clean, reference"):
        METHODS.get("ecq").Config(profile="official")


def test_identity_depends_on_resolved_switches_only():
    base = {"suite": "x", "data": {"name": "digits"}}
    by_profile = make_run_config(base, "ecq", {"profile": "reference"}, {})
    explicit = {k: v["reference"] for k, v in SWITCHES.items() if k in ("ste", "pmf", "lambda_max_rule")}
    by_fields = make_run_config(base, "ecq", explicit, {})
    assert run_key(by_profile, "fp") == run_key(by_fields, "fp")
    clean = make_run_config(base, "ecq", {}, {})
    assert run_key(clean, "fp") == run_key(make_run_config(base, "ecq", {"profile": "clean"}, {}), "fp")
    assert run_key(clean, "fp") != run_key(by_profile, "fp")
    assert dataclasses.asdict(by_profile.params)["ste"] == "centroid_signed"
    assert math.isclose(by_profile.params.Lambda, 0.2)
