import pytest
import torch
from torch import nn

from ecqx.relevance import WeightRelevance, start_relevance


def bias_free_mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(6, 16, bias=False), nn.ReLU(), nn.Linear(16, 12, bias=False), nn.ReLU(), nn.Linear(12, 3, bias=False)
    )


def layers_of(model: nn.Module) -> dict[str, nn.Module]:
    return {f"{n}.weight": m for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}


@pytest.mark.parametrize("composite", ["epsilon_plus", "epsilon_plus_flat", "epsilon_alpha2_beta1_flat"])
def test_weight_relevances_are_conserved(composite):
    model = bias_free_mlp()
    x = torch.randn(32, 6, dtype=torch.float64)
    model = model.double()
    y = torch.randint(0, 3, (32,))
    rel = WeightRelevance(composite, "none", epsilon=1e-12)(model, x, y, layers_of(model))
    total = start_relevance(model(x), y).sum().item()
    # the last layer's weights receive the start relevance; each layer passes on what reaches it
    for name, r in rel.items():
        assert r.shape == layers_of(model)[name].weight.shape
        assert r.sum().item() == pytest.approx(total, rel=1e-6), name


def test_two_layer_hand_computed():
    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 1.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 1.0]]))
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    # z1 = (-1, 2.5), a1 = (0, 2.5), z2 = (5, 2.5); start relevance R2 = (5, 0) for class 0
    # R_W2[j,i] = W2 a1_i R2_j / z2_j ; R_a1 = (0, 5) ; R_W1[j,i] = W1 x_i R_a1_j / z1_j
    rel = WeightRelevance("epsilon_plus", "none", epsilon=1e-12)(model, x, torch.tensor([0]), layers_of(model))
    torch.testing.assert_close(rel["2.weight"], torch.tensor([[0.0, 5.0], [0.0, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(rel["0.weight"], torch.tensor([[0.0, 0.0], [1.0, 4.0]], dtype=torch.float64))


def test_multilabel_start_relevance_sums_positive_logits():
    logits = torch.tensor([[1.0, -2.0, 3.0]])
    target = torch.tensor([[1.0, 0.0, 1.0]])
    assert start_relevance(logits, target).tolist() == [[1.0, 0.0, 3.0]]
    assert start_relevance(logits, torch.tensor([1])).tolist() == [[0.0, -2.0, 0.0]]


def test_batchnorm_canonizer_and_no_side_effects():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    model.train()
    model(torch.randn(8, 1, 6, 6))  # give BatchNorm running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    x, y = torch.randn(5, 1, 6, 6), torch.randint(0, 3, (5,))
    rel = WeightRelevance("epsilon_plus_flat", "sequential_bn")(model, x, y, layers_of(model))
    assert set(rel) == {"0.weight", "4.weight"}
    assert all(torch.isfinite(r).all() and r.abs().sum() > 0 for r in rel.values())
    assert model.training, "training mode restored"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed by the LRP pass"
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters()), "gradients untouched"


def test_unknown_composite_names_the_choices():
    with pytest.raises(ValueError, match="unknown LRP composite 'nope'; known: .*epsilon_plus_flat"):
        WeightRelevance("nope")


@pytest.mark.parametrize("start", ["logit", "batch_mean"])
def test_chunked_lrp_sums_to_the_whole_batch_relevance(start):
    """relevance_chunk: the same relevances up to the order of summation over the batch."""
    from benchmarks.models import MODELS
    from ecqx.layers import select_layers

    torch.manual_seed(0)
    model = MODELS.get("vgg_tiny")(5, (3, 32, 32))
    model(torch.randn(8, 3, 32, 32))  # BatchNorm statistics
    x, y = torch.randn(10, 3, 32, 32), torch.randint(0, 5, (10,))
    engine = WeightRelevance("epsilon_plus_flat", model.lrp_canonizer, start=start)
    whole = engine(model, x, y, select_layers(model))
    parts = engine.chunked(model, x, y, select_layers(model), 3)
    literal: dict[str, torch.Tensor] = {}  # the sum over sub-batches, written out
    for xs, ys in zip(x.split(3), y.split(3)):
        for name, r in engine(model, xs, ys, select_layers(model)).items():
            r = r * (len(xs) / len(x)) if start == "batch_mean" else r
            literal[name] = literal[name] + r if name in literal else r
    for name, r in whole.items():
        torch.testing.assert_close(parts[name], r, rtol=1e-4, atol=1e-6 * float(r.abs().max()))
        assert torch.equal(parts[name], literal[name])  # folded as they arrive: the same sums
        assert not torch.equal(r, torch.zeros_like(r))


def test_ecqx_frees_spent_gradients_before_its_lrp_pass():
    from ecqx.ecqx_method import ECQx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    method = ECQx(ECQx.Config(bits=3, relevance_chunk=2))
    method.prepare(model)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
    nn.functional.cross_entropy(model(x), y).backward()
    method.after_step(model, (x, y))
    assert all(p.grad is None for p in model.parameters())
    assert set(method.relevance) == set(method.layers)


class _SharedTwice(nn.Module):
    """A layer the forward runs twice (its relevance sums two contributions) and one it never runs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.inp, self.shared, self.out = nn.Linear(6, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.unused = nn.Linear(8, 8)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        h = torch.relu(self.shared(torch.relu(self.shared(h))))
        return self.out(h)


@pytest.mark.parametrize("make", [bias_free_mlp, _SharedTwice])
def test_folded_relevances_equal_the_returned_ones(make):
    """fold: every layer reaches the callback once, with the relevance the plain call returns (bit for
    bit), a twice-run layer after both contributions, a never-run layer as zeros; nothing is returned."""
    model = make()
    layers = layers_of(model)
    x, y = torch.randn(7, 6), torch.randint(0, 3, (7,))
    engine = WeightRelevance("epsilon_plus_flat")
    whole = engine(model, x, y, layers)
    folded: dict[str, list[torch.Tensor]] = {}

    def fold(name, r):
        folded.setdefault(name, []).append(r)

    assert engine(model, x, y, layers, fold=fold) == {}
    if make is bias_free_mlp:  # folded during the backward pass (output layer first), not after it
        assert list(folded) == list(reversed(layers))
    assert set(folded) == set(layers) and all(len(v) == 1 for v in folded.values())
    for name, r in whole.items():
        assert torch.equal(folded[name][0], r), name
    if make is _SharedTwice:
        assert torch.equal(folded["unused.weight"][0], torch.zeros(8, 8))
        assert not torch.equal(folded["shared.weight"][0], torch.zeros(8, 8))


def test_ecqx_relevance_ema_is_the_same_with_folding():
    """ECQx folds each layer's fresh relevance into its EMA during the LRP pass: bit for bit
    R = α·R_prev + (1-α)·R_new of the relevances the plain call returns for the same weights."""
    from ecqx.ecqx_method import ECQx

    model = bias_free_mlp(1)
    method = ECQx(ECQx.Config(bits=3, alpha=0.3))
    method.prepare(model)
    engine = method.relevance_engine(model)
    plain = type(engine).__call__
    seen: list[dict[str, torch.Tensor]] = []

    def recording(self, model, x, y, layers, fold=None):  # the plain result first (the pass changes nothing)
        seen.append(plain(self, model, x, y, layers))
        return plain(self, model, x, y, layers, fold=fold)

    engine.__class__ = type("Recording", (type(engine),), {"__call__": recording})
    want: dict[str, torch.Tensor] = {}
    for _ in range(3):
        x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))
        method.after_step(model, (x, y))
        want = {k: r.clone() if k not in want else want[k].mul_(0.3).add_(r, alpha=0.7) for k, r in seen[-1].items()}
        assert set(method.relevance) == set(want)
        for name, r in want.items():
            assert torch.equal(method.relevance[name], r), name
