"""Routing, experts and mapper on their own: dispatch, losses, knob, Gumbel, sampling convention."""

from __future__ import annotations

import math

import pytest
import torch

from moeisr.coords import make_coord
from moeisr.errors import UserError
from moeisr.models.moe.experts import ExpertSet, resolve_expert_hidden_lists
from moeisr.models.moe.mapper import Mapper, relative_scale, sample_logits
from moeisr.models.moe.routing import (
    Router,
    RoutingInfo,
    balance_loss,
    cost_loss,
    dense_dispatch,
    knob_assign,
    knob_for_budget,
    routed_macs,
    sparse_dispatch,
    straight_through_gumbel,
)

LIIF_HIDDEN = [256, 256, 256, 256]


def small_experts(in_dim=20):
    return ExpertSet(in_dim, 3, [[32, 32, 32], [16], [32], [32, 32]])


def test_expert_families_and_costs():
    depth = resolve_expert_hidden_lists(None, LIIF_HIDDEN)
    assert depth == [[256], [256] * 2, [256] * 3, [256] * 4]
    assert resolve_expert_hidden_lists("width", LIIF_HIDDEN) == [[64] * 4, [128] * 4, [192] * 4, [256] * 4]
    assert resolve_expert_hidden_lists("depth", [256] * 3)[-1] == [256] * 3
    specs = [{"name": "mlp", "args": {"hidden_list": [8]}}, {"hidden_list": [4]}, [2, 2]]
    assert resolve_expert_hidden_lists(specs, LIIF_HIDDEN) == [[8], [4], [2, 2]]
    with pytest.raises(UserError):
        resolve_expert_hidden_lists("deep", LIIF_HIDDEN)
    with pytest.raises(UserError):
        resolve_expert_hidden_lists([[256, -1]], LIIF_HIDDEN)

    experts = ExpertSet(580, 3, depth)
    # closed form: 580·256 + k·256·256 + 256·3 for k extra hidden layers
    expected = [580 * 256 + k * 256 * 256 + 256 * 3 for k in range(4)]
    assert experts.macs_per_input == expected
    # a count of the Linear weights agrees with the closed form (bias-free MACs)
    for e, macs in zip(experts, expected, strict=True):
        assert sum(p.numel() for n, p in e.named_parameters() if n.endswith("weight")) == macs

    shuffled = small_experts()
    assert shuffled.macs_per_input == sorted(shuffled.macs_per_input)
    assert shuffled.hidden_lists == [[16], [32], [32, 32], [32, 32, 32]]
    assert shuffled.relative_costs()[-1] == 1.0


def test_sparse_dispatch_equals_dense_one_hot_mixture():
    experts = small_experts()
    x = torch.randn(2, 300, 4, 20)
    assign = torch.randint(0, 4, (2, 300))
    assign[0, :10] = 3  # make sure every expert has work and some have a lot
    one_hot = torch.nn.functional.one_hot(assign, 4).float()
    with torch.no_grad():
        dense = dense_dispatch(experts, x, one_hot)
        sparse = sparse_dispatch(experts, x, assign)
    assert sparse.shape == (2, 300, 4, 3)
    torch.testing.assert_close(sparse, dense, atol=1e-5, rtol=0)
    # the single-expert fast path is the same function
    all_two = torch.full((2, 300), 2)
    torch.testing.assert_close(sparse_dispatch(experts, x, all_two), experts[2](x), atol=1e-6, rtol=0)


def test_sparse_dispatch_runs_each_expert_only_on_its_queries():
    experts = small_experts()
    seen = [0] * 4
    hooks = [
        e.register_forward_hook(lambda m, i, o, j=j: seen.__setitem__(j, seen[j] + i[0].shape[0]))
        for j, e in enumerate(experts)
    ]
    assign = torch.tensor([[0, 0, 1, 3, 3, 3]])
    with torch.no_grad():
        sparse_dispatch(experts, torch.randn(1, 6, 4, 20), assign)
    for hook in hooks:
        hook.remove()
    assert seen == [2, 1, 0, 3]  # rows of K inputs each; expert 2 never ran


def test_gumbel_straight_through_is_one_hot_and_seeded():
    logits = torch.randn(3, 50, 4, requires_grad=True)
    gen = torch.Generator().manual_seed(7)
    weights, assign = straight_through_gumbel(logits, tau=0.5, generator=gen)
    torch.testing.assert_close(weights.detach(), torch.nn.functional.one_hot(assign, 4).float(), atol=1e-6, rtol=0)
    _, again = straight_through_gumbel(logits, tau=0.5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(assign, again)
    (weights * torch.arange(4.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_gumbel_samples_follow_the_softmax():
    logits = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])).expand(20000, 4)
    _, assign = straight_through_gumbel(logits, tau=1.0, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(assign, minlength=4).float() / assign.numel()
    torch.testing.assert_close(freq, torch.tensor([0.1, 0.2, 0.3, 0.4]), atol=0.015, rtol=0)


def _info(probs: torch.Tensor, assign: torch.Tensor) -> RoutingInfo:
    costs = torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    return RoutingInfo(probs.log(), probs, assign, None, costs)


def test_balance_losses_on_crafted_routings():
    q, j = 400, 4
    uniform = torch.full((1, q, j), 1.0 / j)
    balanced = torch.arange(q).remainder(j).view(1, q)
    assert balance_loss(_info(uniform, balanced), "switch").item() == pytest.approx(1.0, abs=1e-6)
    assert balance_loss(_info(uniform, balanced), "cv2").item() == pytest.approx(0.0, abs=1e-9)

    one_hot = torch.zeros(1, q, j)
    one_hot[..., 2] = 1.0
    all_two = torch.full((1, q), 2)
    assert balance_loss(_info(one_hot.clamp_min(1e-30), all_two), "switch").item() == pytest.approx(j, abs=1e-5)
    assert balance_loss(_info(one_hot.clamp_min(1e-30), all_two), "cv2").item() == pytest.approx(j - 1, abs=1e-5)
    assert balance_loss(_info(uniform, balanced), "none").item() == 0.0
    # expected relative cost: uniform probabilities average the four relative costs
    assert cost_loss(_info(uniform, balanced)).item() == pytest.approx(0.625, abs=1e-6)
    with pytest.raises(UserError):
        balance_loss(_info(uniform, balanced), "entropy")


def test_router_aux_loss_weights_and_gradient():
    router = Router(tau=1.0, balance="switch", balance_weight=0.1, cost_weight=0.5)
    logits = torch.randn(2, 64, 4, requires_grad=True)
    costs = torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    info = router.route(logits, costs, training=True, generator=torch.Generator().manual_seed(1))
    expected = 0.1 * balance_loss(info, "switch") + 0.5 * cost_loss(info)
    loss = router.aux_loss(info)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(UserError):
        Router(balance="entropy")
    with pytest.raises(UserError):
        Router(tau=0.0)


def test_eval_routing_without_probabilities_is_the_same_routing():
    """eval_probs=False (the executed path) skips the softmax; the knob-argmax routing is unchanged and the
    probabilities are computed on demand; training always computes them."""
    router = Router()
    logits = torch.randn(2, 64, 4, generator=torch.Generator().manual_seed(2))
    costs = torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    for knob in (0.0, 0.7, math.inf, -math.inf):
        full = router.route(logits, costs, training=False, knob=knob)
        lean = router.route(logits, costs, training=False, knob=knob, eval_probs=False)
        assert lean.probs is None and torch.equal(lean.assign, full.assign)
        assert torch.equal(lean.probabilities(), full.probs) and lean.probs is not None
    trained = router.route(logits, costs, training=True, eval_probs=False, generator=torch.Generator().manual_seed(1))
    assert trained.probs is not None


def test_knob_is_monotone_and_infinite_knobs_are_exact():
    torch.manual_seed(3)
    logits = torch.randn(1, 5000, 4) * 3
    macs = [10, 20, 35, 60]
    costs = torch.tensor(macs, dtype=torch.float64) / 60
    knobs = [-math.inf, -100.0, -5.0, -1.0, -0.1, 0.0, 0.1, 1.0, 5.0, 100.0, math.inf]
    per_query = [costs[knob_assign(logits, costs, k)] for k in knobs]
    totals = [routed_macs(knob_assign(logits, costs, k), macs, ensemble=4) for k in knobs]
    for a, b in zip(per_query[:-1], per_query[1:], strict=True):
        assert torch.all(b <= a)  # every query's cost is non-increasing in the knob
    assert totals == sorted(totals, reverse=True) and totals[0] > totals[5] > totals[-1]
    assert torch.equal(knob_assign(logits, costs, 0.0), logits.argmax(-1))
    assert torch.all(knob_assign(logits, costs, math.inf) == 0)
    assert torch.all(knob_assign(logits, costs, -math.inf) == 3)
    assert totals[-1] == 4 * 5000 * 10 and totals[0] == 4 * 5000 * 60
    with pytest.raises(UserError):
        knob_assign(logits, costs, math.nan)

    def mean_cost(k):
        return costs[knob_assign(logits, costs, k)].mean().item()

    for target in (0.3, 0.5, 0.8):
        k = knob_for_budget(logits, costs, target)
        assert mean_cost(k) <= target < mean_cost(k - 1e-6)
    assert knob_for_budget(logits, costs, 1.0) == -math.inf
    with pytest.raises(UserError):
        knob_for_budget(logits, costs, 0.1)


def test_mapper_shapes_sampling_and_scale_input():
    feat = torch.randn(2, 16, 5, 7)
    for n_layers in (1, 3, 5):
        mapper = Mapper(16, 4, n_layers=n_layers, width=8)
        assert mapper(feat).shape == (2, 4, 5, 7)
        assert sum(isinstance(m, torch.nn.Conv2d) for m in mapper.body) == n_layers
    with pytest.raises(UserError):
        Mapper(16, 4, n_layers=6)

    # at LR pixel centres bilinear sampling returns the map itself; a non-square map checks the (row, col) flip
    logits = torch.randn(2, 4, 5, 7)
    coord = make_coord((5, 7)).unsqueeze(0).expand(2, -1, -1)
    torch.testing.assert_close(sample_logits(logits, coord), logits.flatten(2).transpose(1, 2), atol=1e-5, rtol=0)
    # outside the grid: border values
    far = torch.tensor([[[-1.0, -1.0], [1.0, 1.0]]]).expand(2, -1, -1)
    out = sample_logits(logits, far)
    torch.testing.assert_close(out[:, 0], logits[:, :, 0, 0])
    torch.testing.assert_close(out[:, 1], logits[:, :, -1, -1])

    scaled = Mapper(16, 4, n_layers=2, width=8, use_cell=True)
    cell = torch.tensor([2 / 20, 2 / 28]).expand(2, 3, 2)
    scale = relative_scale(cell, (5, 7))
    torch.testing.assert_close(scale, torch.tensor([[0.25, 0.25]] * 2))
    a, b = scaled(feat, scale), scaled(feat, scale * 2)
    assert a.shape == (2, 4, 5, 7) and not torch.allclose(a, b)
    with pytest.raises(ValueError):
        scaled(feat)
