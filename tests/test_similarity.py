"""Explanation-similarity maths (ecqx.similarity) against literal versions, and the LRP input maps."""

import copy

import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from ecqx.attribution import LRPChoice, explained_pairs, input_relevance, lrp_choice
from ecqx.similarity import average_ranks, cosine, flip_share, map_similarity, spearman, topk_count, topk_overlap


def maps(seed: int, rows: int = 12, cols: int = 30, ties: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(rows, cols, generator=g)
    return a.round() if ties else a


@pytest.mark.parametrize("ties", [False, True])
def test_spearman_matches_scipy_with_ties(ties):
    a, b = maps(0, ties=ties), maps(1, ties=ties)
    expected = [spearmanr(x.numpy(), y.numpy()).statistic for x, y in zip(a, b)]
    torch.testing.assert_close(spearman(a, b), torch.tensor(expected, dtype=torch.float64))
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_cosine_and_topk_against_literal_versions():
    a, b = maps(2), maps(3)
    literal = [float(x @ y) / (float(x.norm()) * float(y.norm())) for x, y in zip(a.double(), b.double())]
    torch.testing.assert_close(cosine(a, b), torch.tensor(literal, dtype=torch.float64))
    k = topk_count(a.shape[1])
    assert k == 3
    literal_topk = [
        len(set(x.argsort(descending=True)[:k].tolist()) & set(y.argsort(descending=True)[:k].tolist())) / k
        for x, y in zip(a, b)
    ]
    assert topk_overlap(a, b).tolist() == literal_topk
    assert topk_count(64) == 7 and topk_count(490) == 49 and topk_count(5) == 1


def test_identical_maps_score_exactly_one_and_opposite_ones_minus_one():
    a = maps(4, ties=True)
    sim = map_similarity(a, a.clone())
    assert sim == {"spearman": 1.0, "cosine": 1.0, "topk": 1.0}
    assert spearman(a, -a).tolist() == pytest.approx([-1.0] * len(a))
    assert cosine(a, -a).tolist() == pytest.approx([-1.0] * len(a))
    zero = torch.zeros(2, 5)
    assert cosine(zero, zero).tolist() == [1.0, 1.0] and spearman(zero, zero).tolist() == [1.0, 1.0]
    assert cosine(zero, torch.ones(2, 5)).tolist() == [0.0, 0.0]
    assert flip_share(torch.tensor([1, 2, 3, 4]), torch.tensor([1, 0, 3, 0])) == 0.5
    with pytest.raises(ValueError, match="equal shape"):
        spearman(a, a[:, :5])


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 20), nn.ReLU(), nn.Linear(20, 4))


def test_input_maps_one_row_per_explained_pair_and_conserve_relevance():
    model = small_net().double()
    x = torch.rand(5, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0])
    choice = lrp_choice(model)
    assert (choice.composite, choice.canonizer) == ("epsilon_plus", "none")
    r = input_relevance(model, x, y)
    assert r.shape == (5, 16)
    multi = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    rows, classes = explained_pairs(multi)
    assert rows.tolist() == [0, 0, 1] and classes.tolist() == [0, 2, 3]
    assert input_relevance(model, x[:2], multi).shape == (3, 16)
    # the same maps from a copy; the model's mode is restored
    model.train()
    assert torch.equal(input_relevance(copy.deepcopy(model), x, y), r) and model.training


def test_the_flat_input_rule_would_make_every_dense_map_constant():
    """Why the maps drop the ECQx composite's flat input rule: behind a dense first layer it spreads
    each neuron's relevance evenly over the inputs, so every map is constant."""
    model = small_net().double()
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    flat = input_relevance(model, x, y, LRPChoice("epsilon_plus_flat", "none", 1e-6))
    assert torch.allclose(flat, flat[:, :1].expand_as(flat))
    assert not torch.allclose(input_relevance(model, x, y), flat)
