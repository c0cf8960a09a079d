"""Routing: the one module that knows how queries are assigned and dispatched to experts.

RECONSTRUCTION NOTE: the MoEISR paper's full text is unavailable; what follows is our reconstruction,
every choice a knob (see docs/moeisr.md for the formulas and the monotonicity proof).

Training (`Router.route(..., training=True)`): straight-through Gumbel-Softmax with temperature τ.
The forward pass uses the hard one-hot sample, the backward pass the soft sample's gradient. Every
expert runs on every query (dense) and the output is Σ_j onehot_j · expert_j(x), so the gradient
reaches the mapper (through the soft sample) and all experts.

Inference (`training=False`): expert = argmax_j(l_j + bias_j) with bias_j = -knob · c_j / c_max, where
c_j is expert j's MACs per decoder input. Dispatch is SPARSE: each expert runs only on the queries
routed to it (all K local-ensemble inputs of a query go to that query's expert), so saved MACs are
saved time. knob = 0 is plain argmax; knob = +inf sends everything to the cheapest expert and -inf to
the most expensive, exactly. The chosen cost per query is non-increasing in the knob.

Auxiliary losses on a `RoutingInfo` (training only):
- balance "switch" (default): J · Σ_j f_j · P_j, with f_j the fraction of queries hard-assigned to j
  and P_j the mean softmax probability of j. 1 when balanced, J when everything goes to one expert.
- balance "cv2": squared coefficient of variation (population variance) of the importances
  I_j = Σ_q p_qj. 0 when balanced, J-1 when everything goes to one expert.
- balance "none": 0.
- cost (weight `cost_weight`, default 0): mean_q Σ_j p_qj · c_j / c_max, the expected relative cost,
  in (0, 1]. A budget term, not a balance term. With `cost_target` ρ it becomes (cost − ρ)²: a target.
- per-expert loss (weight `expert_loss_weight` α, default 0; added by the training objective, which has the
  ground truth): α · mean_j L1(pred_j, gt), pred_j the prediction had every query gone to expert j, so each
  expert learns from every training pixel, as nested early exits do.
- Gumbel-noise annealing (`noise_anneal_steps`): the training sample's noise falls linearly to 0, so the
  training pick converges to the inference pick (argmax at knob 0).
`Router.aux_loss(info)` = balance_weight · balance + cost_weight · cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from moeisr.errors import UserError
from moeisr.models.base import InferenceCache
from moeisr.models.mlp import DenseInputs, InferenceInputs

BALANCE_KINDS = ("switch", "cv2", "none")


@dataclass
class RoutingInfo:
    """What routing decided for a batch of queries.

    logits: B×Q×J mapper logits at the queries (with grad in training).
    probs: B×Q×J softmax(logits) (no noise, no temperature): the P_j / importance of the balance losses; None
      when routing skipped it (eval on the "as executed" path, where nothing reads it): use `probabilities()`.
    assign: B×Q int64 in [0, J): the expert of each query (hard sample in training, knob-argmax at eval).
    weights: B×Q×J straight-through one-hot (training) or None (eval: sparse dispatch).
    relative_costs: (J,) c_j / c_max.
    ensemble: K, decoder inputs per query, filled in by dispatch (4 for LIIF/LTE local ensemble).
    expert_preds: J×B×Q×3 each expert's prediction of every query (training with `expert_loss_weight` > 0), else None.
    """

    logits: torch.Tensor
    probs: torch.Tensor | None
    assign: torch.Tensor
    weights: torch.Tensor | None
    relative_costs: torch.Tensor
    ensemble: int | None = field(default=None)
    expert_preds: torch.Tensor | None = field(default=None)

    @property
    def n_experts(self) -> int:
        return self.logits.shape[-1]

    def probabilities(self) -> torch.Tensor:
        """`probs`, computed from the logits (and kept) if routing skipped them."""
        if self.probs is None:
            self.probs = self.logits.softmax(dim=-1)
        return self.probs

    def counts(self) -> torch.Tensor:
        """Queries per expert: (J,) int64."""
        return torch.bincount(self.assign.reshape(-1), minlength=self.n_experts)

    def shares(self) -> torch.Tensor:
        """Fraction of queries per expert: (J,) float64, sums to 1."""
        counts = self.counts().to(torch.float64)
        return counts / counts.sum().clamp_min(1)


def gumbel_noise(like: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise shaped like `like` (-log of an Exp(1) draw), from `generator` or the global RNG."""
    exp = torch.empty_like(like, memory_format=torch.legacy_contiguous_format).exponential_(generator=generator)
    return -exp.log()


def straight_through_gumbel(
    logits: torch.Tensor, tau: float, generator: torch.Generator | None = None, noise_scale: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard Gumbel-Softmax sample with straight-through gradient.

    logits: ...×J. Returns (weights ...×J, one-hot in the forward pass, soft gradient; assign ... int64).
    noise_scale multiplies the Gumbel noise: at 0 the pick is argmax(logits), the inference pick at knob 0.
    """
    if not tau > 0:
        raise UserError(f"Gumbel temperature tau={tau} must be > 0")
    noise = gumbel_noise(logits, generator) * noise_scale if noise_scale else 0.0
    soft = ((logits + noise) / tau).softmax(dim=-1)
    assign = soft.argmax(dim=-1)
    hard = F.one_hot(assign, logits.shape[-1]).to(soft.dtype)
    return hard - soft.detach() + soft, assign


def knob_assign(logits: torch.Tensor, relative_costs: torch.Tensor, knob: float = 0.0) -> torch.Tensor:
    """Deterministic routing: argmax_j(l_j - knob · c_j / c_max), in float64.

    logits: ...×J; relative_costs: (J,) in (0, 1]; knob: float, ±inf allowed. Returns ... int64.
    knob=+inf -> the cheapest expert everywhere, -inf -> the most expensive (first one on cost ties).
    """
    knob = float(knob)
    if math.isnan(knob):
        raise UserError("routing_knob is NaN; use a float, +inf (all cheapest) or -inf (all deepest)")
    shape = logits.shape[:-1]
    if math.isinf(knob):
        costs = relative_costs.to(logits.device)
        pick = costs.argmin() if knob > 0 else costs.argmax()
        return torch.full(shape, int(pick), dtype=torch.int64, device=logits.device)
    bias = -knob * relative_costs.to(device=logits.device, dtype=torch.float64)
    return (logits.detach().to(torch.float64) + bias).argmax(dim=-1)


def knob_for_budget(logits: torch.Tensor, relative_costs: torch.Tensor, target: float, iters: int = 60) -> float:
    """The smallest knob whose routing costs at most `target` (mean c/c_max over the queries), by bisection.

    logits: ...×J; target in [c_min/c_max, 1]. Valid because the cost is non-increasing in the knob.
    Returns -inf when even the deepest routing fits, +inf only if no finite knob below 2^60 reaches it.
    """
    costs = relative_costs.to(device=logits.device, dtype=torch.float64)
    if not costs.min().item() <= target:
        raise UserError(f"budget {target} is below the cheapest expert's relative cost {costs.min().item():.4g}")

    def mean_cost(knob: float) -> float:
        return costs[knob_assign(logits, costs, knob)].mean().item()

    if mean_cost(-math.inf) <= target:
        return -math.inf
    lo, hi = -1.0, 1.0
    while mean_cost(lo) <= target:  # lo must overspend
        lo *= 2
        if lo < -(2.0**60):
            return -math.inf
    while mean_cost(hi) > target:  # hi must fit
        hi *= 2
        if hi > 2.0**60:
            return math.inf
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if mean_cost(mid) <= target else (mid, hi)
    return hi


def dense_dispatch(
    experts: Sequence[nn.Module], x: torch.Tensor, weights: torch.Tensor, keep: list | None = None
) -> torch.Tensor:
    """Σ_j weights_j · expert_j(x), every expert on every input (training).

    x: B×Q×K×D decoder inputs; weights: B×Q×J. Returns B×Q×K×out. `keep`, if a list, receives each expert's
    output (B×Q×K×out), for the per-expert loss.
    """
    out = None
    for j, expert in enumerate(experts):
        result = expert(x)
        if keep is not None:
            keep.append(result)
        term = weights[..., j, None, None] * result
        out = term if out is None else out + term
    return out


def sparse_dispatch(experts: Sequence[nn.Module], x: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """Each expert only on its own queries (inference): gather, run, scatter back.

    x: B×Q×K×D, or `InferenceInputs` with lead B×Q×K (the "as executed" path); assign: B×Q.
    Returns B×Q×K×out. The K inputs of a query share its expert.
    """
    b, q, k, d = x.shape
    if assign.shape != (b, q):
        raise ValueError(f"assignment of shape {tuple(assign.shape)} does not match decoder inputs {tuple(x.shape)}")
    flat_a = assign.reshape(-1)
    counts = torch.bincount(flat_a, minlength=len(experts)).tolist()
    if max(counts, default=0) == b * q:  # one expert takes everything: no gather/scatter needed
        return experts[counts.index(b * q)](x)
    order = torch.argsort(flat_a, stable=True)  # queries grouped by expert
    lazy = isinstance(x, torch.Tensor) and all(getattr(e, "accepts_inference_inputs", False) for e in experts)
    if lazy and not (torch.is_grad_enabled() or torch.jit.is_tracing()):
        x = DenseInputs(x, InferenceCache())  # the experts gather their rows block by block
    if isinstance(x, InferenceInputs):  # gather indices, not rows
        parts = [x.take(index) for index in order.split(counts)]
    else:
        parts = x.reshape(b * q, k, d).index_select(0, order).split(counts)
    out = None
    for j, (index, part) in enumerate(zip(order.split(counts), parts, strict=True)):
        if counts[j] == 0:
            continue
        y = experts[j](part)
        if out is None:
            out = y.new_empty(b * q, k, y.shape[-1])
        out.index_copy_(0, index, y)
    return out.reshape(b, q, k, -1)


def routed_macs(assign: torch.Tensor, macs_per_input: Sequence[int], ensemble: int) -> int:
    """Decoder MACs spent by a routing: Σ_q K · macs_{assign(q)} (exact integer)."""
    counts = torch.bincount(assign.reshape(-1), minlength=len(macs_per_input)).tolist()
    return int(ensemble) * sum(n * m for n, m in zip(counts, macs_per_input, strict=True))


def balance_loss(info: RoutingInfo, kind: str = "switch") -> torch.Tensor:
    """Load-balance term (scalar). switch: J·Σ f_j P_j; cv2: Var(I)/mean(I)² of I_j = Σ_q p_qj; none: 0."""
    probs = info.probabilities().reshape(-1, info.n_experts)
    if kind == "switch":
        frac = F.one_hot(info.assign.reshape(-1), info.n_experts).to(probs.dtype).mean(dim=0)
        return info.n_experts * (frac * probs.mean(dim=0)).sum()
    if kind == "cv2":
        importance = probs.sum(dim=0)
        return importance.var(correction=0) / importance.mean().square().clamp_min(1e-12)
    if kind == "none":
        return probs.new_zeros(())
    raise UserError(f"unknown balance loss {kind!r}; use one of {BALANCE_KINDS}")


def cost_loss(info: RoutingInfo) -> torch.Tensor:
    """Expected relative decoder cost mean_q Σ_j p_qj c_j/c_max (scalar in (0, 1])."""
    probs = info.probabilities()
    costs = info.relative_costs.to(device=probs.device, dtype=probs.dtype)
    return (probs * costs).sum(dim=-1).mean()


@dataclass
class Router:
    """Routing hyper-parameters and the train/eval routing decision.

    tau: Gumbel-Softmax temperature (>0), mutable so a trainer can anneal it.
    balance: "switch" | "cv2" | "none"; balance_weight, cost_weight: weights in `aux_loss`.
    """

    tau: float = 1.0
    balance: str = "switch"
    balance_weight: float = 0.01
    cost_weight: float = 0.0
    cost_target: float | None = None  # ρ: the cost term becomes (E[c/c_max] − ρ)² instead of E[c/c_max]
    noise_anneal_steps: int = 0  # the Gumbel noise falls linearly from 1 to 0 over these training steps (0 = off)
    expert_loss_weight: float = 0.0  # α: every expert is also supervised on every query (nested early exits)
    noise_scale: float = 1.0  # set by `set_step` (mutable, like tau)

    def set_step(self, step: int) -> None:
        """Anneal the Gumbel noise for training step `step` (0-based): 1 − step / noise_anneal_steps, floored at 0."""
        if self.noise_anneal_steps:
            self.noise_scale = max(0.0, 1.0 - step / self.noise_anneal_steps)

    def __post_init__(self):
        if self.balance not in BALANCE_KINDS:
            raise UserError(f"unknown balance loss {self.balance!r}; use one of {BALANCE_KINDS}")
        if not self.tau > 0:
            raise UserError(f"Gumbel temperature tau={self.tau} must be > 0")

    def route(
        self,
        logits: torch.Tensor,
        relative_costs: torch.Tensor,
        training: bool,
        knob: float = 0.0,
        generator: torch.Generator | None = None,
        eval_probs: bool = True,
    ) -> RoutingInfo:
        """Decide the expert of every query. logits: B×Q×J. The knob only acts at eval.

        eval_probs=False (MoEISR's "as executed" path) skips the softmax at eval: the knob-argmax does not
        read it, so the routing is the same bit for bit; `RoutingInfo.probabilities()` computes it on demand.
        Training always computes it (the balance losses need it)."""
        probs = logits.softmax(dim=-1) if training or eval_probs else None
        if training:
            weights, assign = straight_through_gumbel(logits, self.tau, generator, self.noise_scale)
        else:
            weights, assign = None, knob_assign(logits, relative_costs, knob)
        return RoutingInfo(logits, probs, assign, weights, relative_costs)

    @staticmethod
    def dispatch(
        experts: Sequence[nn.Module], x: torch.Tensor, info: RoutingInfo, keep: list | None = None
    ) -> torch.Tensor:
        """Run the experts on decoder inputs x (B×Q×K×D) as `info` says: dense in training (each expert's output
        appended to `keep` if given), sparse at eval."""
        info.ensemble = x.shape[2]
        if info.weights is not None:
            return dense_dispatch(experts, x, info.weights, keep)
        return sparse_dispatch(experts, x, info.assign)

    def aux_loss(self, info: RoutingInfo) -> torch.Tensor:
        """balance_weight · balance_loss + cost_weight · cost_loss (scalar, differentiable w.r.t. the mapper)."""
        loss = self.balance_weight * balance_loss(info, self.balance)
        if self.cost_weight:
            cost = cost_loss(info)
            loss = loss + self.cost_weight * (cost if self.cost_target is None else (cost - self.cost_target) ** 2)
        return loss
