"""Recipe knobs of the routing loss on the bundled cpu MoEISR-LIIF and real training patches: the cost target ρ
and Gumbel-noise annealing (training picks that agree with the inference picks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moeisr.config import load_experiment
from moeisr.data.train import ImplicitDownsampled, TrainImages
from moeisr.models.checkpoint import load_model
from moeisr.models.moe.routing import cost_loss
from moeisr.train import build_model

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def batch():
    data = ImplicitDownsampled(TrainImages(["BSD200"]), 32, 1, 4, augment=False, sample_q=512, seed=4)
    items = [data[i] for i in range(4)]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


@pytest.fixture(scope="module")
def model():
    return load_model(REPO / "results" / "checkpoints" / "moeisr_liif.pt")


def picks(model, batch, noise_scale: float):
    """(training picks, inference picks at knob 0) of the same queries."""
    model.router.noise_scale = noise_scale
    with torch.no_grad():
        features = model.encode(batch["inp"])
        model.train()
        _, train_info = model.query_with_info(features, batch["coord"], batch["cell"], generator=torch.Generator())
        model.eval()
        _, test_info = model.query_with_info(features, batch["coord"], batch["cell"], routing_knob=0.0)
    return train_info, test_info


def test_annealed_noise_makes_the_training_pick_the_inference_pick(model, batch):
    noisy, test = picks(model, batch, 1.0)
    agree = float((noisy.assign == test.assign).float().mean())
    assert agree < 0.8  # the balance loss keeps the logits close: the Gumbel sample often differs from argmax
    quiet, test = picks(model, batch, 0.0)
    assert torch.equal(quiet.assign, test.assign)
    model.router.noise_anneal_steps = 100
    model.router.set_step(25)
    assert model.router.noise_scale == pytest.approx(0.75)
    model.router.set_step(500)
    assert model.router.noise_scale == 0.0
    model.router.noise_anneal_steps, model.router.noise_scale = 0, 1.0


def test_the_cost_target_penalises_the_distance_to_rho(model, batch):
    info, _ = picks(model, batch, 1.0)
    cost = float(cost_loss(info))
    router = model.router
    router.cost_weight, router.balance_weight = 1.0, 0.0
    try:
        router.cost_target = None
        assert float(router.aux_loss(info)) == pytest.approx(cost)
        router.cost_target = 0.6
        assert float(router.aux_loss(info)) == pytest.approx((cost - 0.6) ** 2)
    finally:
        router.cost_weight, router.balance_weight, router.cost_target = 0.0, 0.01, None


def test_the_knobs_come_from_the_loss_section_and_leave_the_default_spec_alone():
    default = build_model(load_experiment(REPO / "experiments" / "moeisr_liif.yaml", "cpu"))
    assert "cost_target" not in default.spec["args"]["routing"]  # earlier checkpoints' specs stay as they were
    asked = load_experiment(
        REPO / "experiments" / "moeisr_liif.yaml", "cpu",
        ["loss.args.cost_target=0.6", "loss.args.cost_weight=1.0", "loss.args.noise_anneal_steps=1000"],
    )  # fmt: skip
    router = build_model(asked).router
    assert (router.cost_target, router.cost_weight, router.noise_anneal_steps) == (0.6, 1.0, 1000)


def test_the_validator_reports_the_pick_agreement_on_a_real_image(model):
    from moeisr.train.validation import Validator

    validator = Validator("T91", [2], limit=1, crop=64)
    device = torch.device("cpu")
    model.router.noise_scale = 1.0
    noisy = validator.pick_agreement(model, device)
    model.router.noise_scale = 0.0
    try:
        assert validator.pick_agreement(model, device) == 1.0 and 0.0 < noisy < 1.0
    finally:
        model.router.noise_scale = 1.0


def test_every_expert_is_supervised_on_every_query_with_the_expert_loss(batch):
    from moeisr.models.moe import init_from_backbone
    from moeisr.train.loop import TrainingObjective

    backbone = load_model(REPO / "results" / "checkpoints" / "liif.pt")
    experiment = load_experiment(REPO / "experiments" / "moeisr_liif.yaml", "cpu", ["loss.args.expert_loss_weight=0.5"])
    torch.manual_seed(0)
    moe = init_from_backbone(build_model(experiment), backbone).train()
    assert moe.router.expert_loss_weight == 0.5
    inp, coord, cell, gt = batch["inp"], batch["coord"], batch["cell"], batch["gt"]
    with torch.no_grad():
        pred, info = moe.forward_train(inp, coord, cell, generator=torch.Generator().manual_seed(0))
        reference = backbone.train()(inp, coord, cell)
    preds = info.expert_preds
    assert preds.shape == (moe.n_experts, *pred.shape)
    routed = preds.gather(0, info.assign[None, ..., None].expand(1, *pred.shape))[0]
    assert torch.allclose(pred, routed, atol=1e-5)  # the routed prediction is the picked expert's own
    assert torch.allclose(preds[-1], reference, atol=1e-5)  # the deepest expert is the backbone MLP
    objective = TrainingObjective(moe, 1.0)
    with torch.no_grad():
        loss, l1, _ = objective(inp, coord, cell, gt, torch.Generator().manual_seed(0))
        expected = l1 + moe.aux_loss(info) + 0.5 * (preds - gt[None]).abs().mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
