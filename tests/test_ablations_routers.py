"""Reference routers on a small MoEISR model: every expert's output, the oracle, the random router, the sweep's knobs,
the Pareto front and the REPORT.md section."""

import math

import pytest
import torch

from moeisr.data.degrade import degrade
from moeisr.data.images import load_image
from moeisr.data.roots import data_root
from moeisr.evaluate.routers import (
    assemble,
    counts_for_shares,
    derived_generator,
    expert_outputs,
    matched_knob,
    oracle_assign,
    pixel_errors,
    random_assign,
    sweep_knobs,
)
from moeisr.metrics import psnr
from moeisr.models.moe.moeisr import MoEISR
from moeisr.report.ablations.analysis import front_gap, pareto_mask
from moeisr.report.report_md import ReportInputs, render_report

BACKBONES = {
    "liif": {
        "name": "liif",
        "args": {
            "encoder_spec": {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 8, "no_upsampling": True}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [32, 32, 32]}},
        },
    },
    "lte": {
        "name": "lte",
        "args": {
            "encoder_spec": {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 8, "no_upsampling": True}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [32, 32]}},
            "hidden_dim": 32,
        },
    },
}


def _model(backbone="liif", seed=0):
    torch.manual_seed(seed)
    model = MoEISR(BACKBONES[backbone], experts="depth").eval()
    with torch.no_grad():  # spread the untrained mapper's logits so that the argmax routing mixes the experts
        model.mapper.body[-1].weight.mul_(30)
    return model


@pytest.fixture(scope="module")
def image():
    """A real 48×48 crop of Set5 `bird` at ×2: (hr 1×3×48×48, lr 1×3×24×24) in [0, 1]."""
    hr = load_image(data_root() / "benchmark" / "Set5" / "HR" / "bird.webp")[:, 96:144, 96:144]
    hr, lr = degrade(hr, 2)
    return hr[None], lr[None]


@pytest.mark.data
@pytest.mark.parametrize("backbone", ["liif", "lte"])
def test_expert_outputs_are_the_models_own_routings(image, backbone):
    _, lr = image
    model = _model(backbone)
    size = (48, 48)
    outputs = expert_outputs(model, lr, size, chunk_size=500)
    assert outputs.shape == (model.n_experts, 1, 3, 48, 48) and 0 <= outputs.min() and outputs.max() <= 1
    with torch.inference_mode():
        cheapest = model.upscale(lr, size, routing_knob=math.inf)
        deepest = model.upscale(lr, size, routing_knob=-math.inf)
        mixed = model.upscale(lr, size)
        routing = model.expert_map(lr, size)
    assert torch.allclose(outputs[0], cheapest, atol=1e-6) and torch.allclose(outputs[-1], deepest, atol=1e-6)
    assert len(routing.unique()) > 1  # the default routing mixes experts here
    assert torch.allclose(assemble(outputs, routing), mixed, atol=1e-5)


@pytest.mark.data
def test_oracle_never_picks_an_expert_worse_than_the_deepest_with_eps_zero(image):
    hr, lr = image
    model = _model()
    outputs = expert_outputs(model, lr, (48, 48))
    errors = pixel_errors(outputs, hr)
    exact = oracle_assign(outputs, hr, 0.0)
    chosen = errors.gather(0, exact[None])[0]
    assert (chosen <= errors[-1]).all()
    # it is the cheapest such expert: every cheaper expert is strictly worse than the deepest at that pixel
    for j in range(model.n_experts):
        cheaper = exact > j
        assert (errors[j][cheaper] > errors[-1][cheaper]).all()
    assert psnr(assemble(outputs, exact), hr, 2) >= psnr(outputs[-1], hr, 2)
    # a larger ε never picks a dearer expert, and a huge one picks the cheapest everywhere
    previous = exact
    for eps in (1 / 255, 4 / 255, 16 / 255):
        current = oracle_assign(outputs, hr, eps)
        assert (current <= previous).all()
        previous = current
    assert (oracle_assign(outputs, hr, 10.0) == 0).all()


def test_random_router_reproduces_the_requested_shares():
    shares = [0.1, 0.25, 0.4, 0.25]
    counts = counts_for_shares(shares, 48 * 48)
    assert sum(counts) == 48 * 48 and all(abs(c - s * 48 * 48) < 1 for c, s in zip(counts, shares, strict=True))
    assign = random_assign(counts, (1, 48, 48), derived_generator(0, "Set5", "bird", 2.0))
    got = torch.bincount(assign.reshape(-1), minlength=4) / assign.numel()
    assert torch.allclose(got, torch.tensor(shares, dtype=got.dtype), atol=1 / assign.numel())
    again = random_assign(counts, (1, 48, 48), derived_generator(0, "Set5", "bird", 2.0))
    other = random_assign(counts, (1, 48, 48), derived_generator(1, "Set5", "bird", 2.0))
    assert torch.equal(assign, again) and not torch.equal(assign, other)
    # the placement is spread over the image, not in blocks: each quarter gets about its share of every expert
    quarter = torch.bincount(assign[0, :24, :24].reshape(-1), minlength=4) / (24 * 24)
    assert torch.allclose(quarter, torch.tensor(shares, dtype=quarter.dtype), atol=0.06)
    with pytest.raises(ValueError, match="do not sum"):
        random_assign([1, 2], (2, 2), derived_generator(0))


@pytest.mark.data
def test_sweep_knobs_go_from_all_cheapest_to_all_deepest(image):
    _, lr = image
    model = _model()
    knobs = sweep_knobs(model, [lr], [(48, 48)], points=7)
    assert knobs[0] == math.inf and knobs[-1] == -math.inf and knobs == sorted(knobs, reverse=True)
    assert 3 <= len(knobs) <= 7
    costs = model.experts.relative_costs()
    mean_cost = []
    with torch.inference_mode():
        for knob in knobs:
            routing = model.expert_map(lr, (48, 48), routing_knob=knob)
            mean_cost.append(float(costs[routing].mean()))
            if knob == math.inf:
                assert (routing == 0).all()
            if knob == -math.inf:
                assert (routing == model.n_experts - 1).all()
    assert mean_cost == sorted(mean_cost)  # the knob moves the cost monotonically (docs/moeisr.md §5)


@pytest.mark.data
def test_matched_knob_reroutes_the_reference_to_the_rows_decoder_cost(image):
    _, lr = image
    row, reference = _model(seed=1), _model(seed=2)
    costs = reference.experts.relative_costs()
    with torch.inference_mode():
        row_cost = float(costs[row.expert_map(lr, (24, 24))].mean())  # output = LR size: calibration's own queries
        ref_cost = float(costs[reference.expert_map(lr, (24, 24))].mean())
        knob, got_row, got_ref = matched_knob(row, reference, [lr], [(24, 24)])
        rerouted = float(costs[reference.expert_map(lr, (24, 24), routing_knob=knob)].mean())
    assert math.isclose(got_row, row_cost, abs_tol=1e-6) and math.isclose(got_ref, ref_cost, abs_tol=1e-6)
    assert abs(row_cost - ref_cost) > 0.02  # the two seeds route differently, so the knob has work to do
    assert abs(rerouted - row_cost) < 0.01  # to the row's cost, up to the knob's 4 significant digits and ties
    itself = matched_knob(reference, reference, [lr], [(24, 24)])[0]  # any knob with the default's cost will do
    with torch.inference_mode():
        assert float(costs[reference.expert_map(lr, (24, 24), routing_knob=itself)].mean()) == pytest.approx(ref_cost)


def test_pareto_front_and_gap():
    gflops, psnr_db = [1.0, 2.0, 2.0, 3.0, 4.0], [30.0, 31.0, 30.5, 30.9, 31.5]
    assert pareto_mask(gflops, psnr_db).tolist() == [True, True, False, False, True]
    assert front_gap(gflops, psnr_db, 3.0, 30.9) == pytest.approx(0.1)
    assert front_gap(gflops, psnr_db, 1.0, 30.0) == 0.0


def test_render_report_embeds_the_ablation_section_once():
    inputs = ReportInputs("smoke", "abc", "moeisr reproduce", [], [], {}, "–", [], ablations="## Ablations\n\ntext\n")
    text = render_report(inputs)
    assert text.count("## Ablations\n\ntext\n") == 1 and "<!--" not in text
    assert "## Ablations" not in render_report(ReportInputs("smoke", "abc", "c", [], [], {}, "–", []))
