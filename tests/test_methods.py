"""Contract and training tests: every registered method through prepare -> steps -> finalize."""

import subprocess
import sys

import pytest
import torch
from torch import nn

import baselines  # noqa: F401  (registers the comparison methods)
from ecqx import METHODS, build_config, model_metrics

METHOD_NAMES = METHODS.names()


def test_registry_lists_the_four_methods():
    assert {"ecqx", "ecq", "uniform_qat", "magnitude"} <= set(METHOD_NAMES)


def test_unknown_method_lists_known_names():
    with pytest.raises(KeyError, match="unknown method 'nope'; known: ecq, ecqx, magnitude, uniform_qat"):
        METHODS.get("nope")


def tiny_cnn() -> nn.Module:
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 36, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )
    model.lrp_canonizer = "sequential_bn"
    return model


def blobs(n: int = 600, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, 36, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    x = centres[y] + torch.randn(n, 36, generator=g)
    return x.reshape(n, 1, 6, 6), y


def train(model, method, x, y, epochs, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr)
    steps = epochs * (len(x) // 50)
    if method is not None:
        method.prepare(model, total_steps=steps)
    for _ in range(epochs):
        for i in range(0, len(x), 50):
            batch = (x[i : i + 50], y[i : i + 50])
            opt.zero_grad()
            nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
            opt.step()
            if method is not None:
                method.after_step(model, batch)
    return model


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def pretrained():
    torch.manual_seed(0)
    x, y = blobs()
    return train(tiny_cnn(), None, x, y, epochs=5).state_dict(), (x, y)


def config_for(name: str, bits: int = 3):
    cls = METHODS.get(name)
    values = {"target_sparsity": 0.6, "bits": bits} if name == "magnitude" else {"bits": bits}
    return build_config(cls.Config, values)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_contract_prepare_steps_finalize(name, pretrained):
    state, (x, y) = pretrained
    model = tiny_cnn()
    model.load_state_dict(state)
    method = METHODS.get(name)(config_for(name, bits=3))
    train(model, method, x[:200], y[:200], epochs=2)
    qm = method.finalize(model)
    assert qm.targets == ["0.weight", "4.weight", "6.weight"]
    for target in qm.targets:
        values = qm.target_values(target)
        assert torch.equal(values, dict(model.named_parameters())[target].detach()), "model holds the final values"
        assert torch.unique(values).numel() <= 2**3
        layer = qm.quantized[target]
        assert layer.levels.dtype == torch.int32 and layer.bits == 3
    fresh = tiny_cnn()
    fresh.load_state_dict(qm.state_dict())
    assert accuracy(fresh, x, y) == accuracy(model, x, y)
    metrics = model_metrics(qm)
    assert 0 <= metrics.sparsity <= 1 and metrics.entropy_bits_per_weight <= 3
    assert metrics.fp32_bytes == 4 * sum(t.numel() for t in state.values())


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_short_training_keeps_accuracy_far_above_chance(name, pretrained):
    state, (x, y) = pretrained
    model = tiny_cnn()
    model.load_state_dict(state)
    method = METHODS.get(name)(config_for(name, bits=4))
    train(model, method, x, y, epochs=3, lr=1e-3)
    model.load_state_dict(method.finalize(model).state_dict())
    assert accuracy(model, x, y) > 0.8  # chance is 1/3


def test_identity_straight_through_estimator():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 4))
    method = METHODS.get("ecq")(config_for("ecq", bits=4))
    method.prepare(model)
    latent_before = method.latent["0.weight"].clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 8), torch.randint(0, 4, (16,))
    nn.functional.cross_entropy(model(x), y).backward()
    grad = model[0].weight.grad.clone()
    opt.step()
    method.after_step(model, (x, y))
    torch.testing.assert_close(method.latent["0.weight"], latent_before - 0.1 * grad)


def test_magnitude_reaches_target_and_masks_only_grow():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    method = METHODS.get("magnitude")(build_config(METHODS.get("magnitude").Config, {"target_sparsity": 0.8}))
    method.prepare(model, total_steps=40)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    previous = None
    for _ in range(40):
        opt.zero_grad()
        nn.functional.cross_entropy(model(torch.randn(8, 20)), torch.randint(0, 5, (8,))).backward()
        opt.step()
        method.after_step(model, None)
        pruned = torch.cat([(m.weight == 0).reshape(-1) for m in (model[0], model[2])])
        if previous is not None:
            assert torch.all(pruned[previous]), "a pruned weight came back"
        previous = pruned
    qm = method.finalize(model)
    assert qm.quantized == {} and model_metrics(qm).sparsity == pytest.approx(0.8, abs=0.01)


def test_ecqx_config_rejects_bad_values():
    cls = METHODS.get("ecqx").Config
    with pytest.raises(ValueError, match="bits must be an integer in 2..8"):
        build_config(cls, {"bits": 1})
    with pytest.raises(ValueError, match=r"Lambda \(Λ\) must be in \[0.0, inf\]"):
        build_config(cls, {"Lambda": -1.0})
    with pytest.raises(ValueError, match="unknown key.*lamda.*allowed: bits, Lambda"):
        build_config(cls, {"lamda": 1.0})


def test_library_does_not_import_experiment_packages():
    code = (
        "import sys, ecqx, baselines.ecq, baselines.uniform_qat, baselines.magnitude\n"
        "from ecqx import METHODS; METHODS.names()\n"
        "bad = [m for m in ('mlflow', 'optuna', 'pandas', 'matplotlib', 'zennit', 'benchmarks') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pruned_weights_are_positive_zero():
    """-0.0 would be a distinct value to the coder (a 'survivor' costing 32 bits)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30))
    method = METHODS.get("magnitude")(build_config(METHODS.get("magnitude").Config, {"target_sparsity": 0.5}))
    method.prepare(model, total_steps=0)
    w = model[0].weight.detach()
    assert (w == 0).float().mean() == 0.5 and not torch.signbit(w[w == 0]).any()
