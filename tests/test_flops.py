"""moeisr.flops: fvcore on the real upscale path vs torch's FlopCounterMode and the closed forms, on a
real Set14 image; determinism, chunk-size invariance, the documented zero-cost ops, the executed path, and
errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from fvcore.nn import jit_analysis
from torch.utils.flop_counter import FlopCounterMode

from moeisr.data.degrade import downsample
from moeisr.data.images import load_image
from moeisr.data.roots import data_root
from moeisr.errors import UserError
from moeisr.flops import closed_form as cf
from moeisr.flops import count
from moeisr.flops.handles import ZERO_COST_OPS
from moeisr.models.base import using_decoder_path
from moeisr.models.moe.moeisr import MoEISR
from moeisr.registry import models

pytestmark = pytest.mark.data  # the shared images (tests/shared_data.py)

SCALE = 2
CHUNK = 700  # three chunks per 48×40 output, like upscale on a large image (tracing time grows per chunk)
ENC = {"name": "edsr-baseline", "args": {"n_resblocks": 2, "n_feats": 16}}
HIDDEN = [32, 32, 32]
LIIF = {
    "name": "liif",
    "args": {"encoder_spec": ENC, "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": HIDDEN}}},
}
LTE = {
    "name": "lte",
    "args": {
        "encoder_spec": ENC,
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": HIDDEN}},
        "hidden_dim": 32,
    },
}
DEFAULT_MLP = {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}}
MAPPER = {"n_layers": 3, "width": 16}
SPECS = {
    "liif": LIIF,
    "lte": LTE,
    "moeisr-liif": {"name": "moeisr", "args": {"backbone_spec": LIIF, "mapper": MAPPER}},
    "moeisr-lte": {"name": "moeisr", "args": {"backbone_spec": LTE, "mapper": MAPPER}},
}
# the operators FlopCounterMode counts (mm/addmm/bmm/convolution) appear to fvcore's trace as these
MAC_OPERATORS = ("conv", "linear", "addmm", "mm", "matmul", "bmm", "einsum")


def build(name: str):
    torch.manual_seed(0)
    return models.make(SPECS[name]).eval()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tracing is Python-bound; one thread avoids oversubscribing the shared cores (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    """A real 24×20 LR patch: Set14 'comic' downsampled ×4 (MATLAB bicubic), 1×3×24×20 in [0, 1]."""
    hr = load_image(data_root() / "benchmark" / "Set14" / "HR" / "comic.webp")
    return downsample(hr, 4)[:, 20:44, 10:30].unsqueeze(0).contiguous()


@pytest.fixture(scope="module")
def out_size(lr):
    return tuple(SCALE * s for s in lr.shape[-2:])


@pytest.fixture(scope="module")
def mixed_knobs(lr, out_size):
    """Per MoEISR model, the knob whose decoder cost is halfway between all-cheapest and all-deepest."""
    knobs = {}
    for name in ("moeisr-liif", "moeisr-lte"):
        model = build(name)
        budget = (model.experts.relative_costs().min().item() + 1) / 2
        knobs[name] = model.knob_for_budget(lr, out_size, budget)
    return knobs


@pytest.fixture(scope="module")
def reports(lr, mixed_knobs):
    """Counts shared by the tests (tracing costs ~2 s each)."""
    done = {}

    def get(name: str, knob=None, image=True):
        key = (name, knob, image)
        if key not in done:
            kwargs = {"image": lr if image else None, "routing_knob": knob, "chunk_size": CHUNK}
            done[key] = count(build(name), tuple(lr.shape[-2:]), SCALE, **kwargs)
        return done[key]

    return get


def mac_flops(report) -> int:
    return sum(report.by_operator.get(op, 0) for op in MAC_OPERATORS)


@pytest.mark.parametrize("name", SPECS)
def test_fvcore_agrees_with_flop_counter_mode(name, lr, out_size, reports, mixed_knobs):
    """Compared ops: matrix products and convolutions only (FlopCounterMode counts nothing else),
    FlopCounterMode's 2·MAC halved. MoEISR at a knob that mixes experts, so sparse dispatch is exercised."""
    knob = mixed_knobs.get(name)
    report = reports(name, knob)
    model = build(name)
    kwargs = {"routing_knob": knob} if isinstance(model, MoEISR) else {}
    with FlopCounterMode(display=False) as mode:
        model.upscale(lr, out_size, chunk_size=CHUNK, **kwargs)
    reference = mode.get_total_flops() / 2
    assert abs(mac_flops(report) - reference) <= 0.01 * reference
    assert mac_flops(report) == reference  # measured: identical
    if isinstance(model, MoEISR):
        assert sum(1 for q in report.expert_queries if q) >= 2


def test_edsr_and_liif_decoder_match_the_closed_forms(lr, reports):
    report = reports("liif")
    (h, w), (H, W) = report.lr_size, report.out_size
    assert report.encoder == cf.edsr_encoder(h, w, n_resblocks=2, n_feats=16, elementwise=True)
    assert report.decoder == H * W * cf.liif_decoder_per_pixel(feat_dim=16, hidden_list=HIDDEN)
    assert report.mapper == 0 and report.per_expert == []
    # the only interpolation on LIIF's path is the nearest-cell lookup, which costs 0
    assert report.by_operator.get("grid_sampler", 0) == 0


def test_the_64_channel_liif_figure():
    assert cf.liif_decoder_per_pixel() == 4 * (580 * 256 + 3 * 256 * 256 + 256 * 3) == 1_383_424
    torch.manual_seed(0)
    model = models.make(
        {"name": "liif", "args": {"encoder_spec": {"name": "edsr-baseline"}, "imnet_spec": DEFAULT_MLP}}
    )
    report = count(model, (6, 5), 2)
    assert report.decoder == 12 * 10 * 1_383_424
    assert report.encoder == cf.edsr_encoder(6, 5, elementwise=True)
    assert report.encoder - cf.edsr_encoder(6, 5) == 6 * 5 * 64 * 33  # residual adds and res_scale multiplies


def test_rdn_encoder_matches_the_closed_form(lr):
    torch.manual_seed(0)
    rdn = {"name": "rdn", "args": {"G0": 16, "D": 2, "C": 2, "G": 8}}
    model = models.make({"name": "liif", "args": {"encoder_spec": rdn, "imnet_spec": DEFAULT_MLP}})
    report = count(model, (5, 4), 1.5, image=None)
    assert report.encoder == cf.rdn_encoder(5, 4, G0=16, D=2, C=2, G=8, elementwise=True)
    assert cf.rdn_encoder(5, 4, G0=16, D=2, C=2, G=8) == 20 * (
        9 * 3 * 16 + 9 * 16 * 16 + 2 * (9 * 16 * 8 + 9 * 24 * 8 + 32 * 16) + 32 * 16 + 9 * 16 * 16
    )


def test_lte_matches_the_closed_forms(reports):
    report = reports("lte")
    parts = cf.lte(report.lr_size, report.out_size, feat_dim=16, hidden_dim=32, hidden_list=HIDDEN)
    (h, w) = report.lr_size
    assert report.encoder == cf.edsr_encoder(h, w, n_resblocks=2, n_feats=16, elementwise=True)
    assert report.other_parts["coef"] + report.other_parts["freq"] == parts["coef_freq"]
    assert report.other_parts["phase"] == parts["phase"]
    assert report.decoder == parts["decoder"]
    assert report.by_operator["cos"] + report.by_operator["sin"] == parts["cos_sin"]
    assert report.by_operator["grid_sampler"] == parts["skip"]  # bilinear skip; nearest lookups cost 0


@pytest.mark.parametrize("name", ["moeisr-liif", "moeisr-lte"])
@pytest.mark.parametrize("knob", [math.inf, -math.inf, "mixed"])
def test_moeisr_routed_decoder_and_experts_match_the_closed_forms(name, knob, lr, out_size, reports, mixed_knobs):
    knob = mixed_knobs[name] if knob == "mixed" else knob
    report = reports(name, knob)
    model = build(name)
    (h, w), (H, W) = report.lr_size, report.out_size
    hidden_lists, in_dim, J = model.experts.hidden_lists, model.imnet_in_dim, model.n_experts
    # the routing fvcore saw is the routing expert_map computes independently
    routed = torch.bincount(model.expert_map(lr, out_size, routing_knob=knob).flatten(), minlength=J).tolist()
    assert report.expert_queries == routed and sum(routed) == H * W
    for j, hidden in enumerate(hidden_lists):
        assert report.per_expert[j] == routed[j] * cf.expert_per_pixel(in_dim, hidden)
    assert report.decoder == cf.routed_decoder(routed, hidden_lists, in_dim) == sum(report.per_expert)
    assert report.decoder == model.decoder_macs(model.expert_map(lr, out_size, routing_knob=knob))
    if math.isinf(knob):
        only = 0 if knob > 0 else J - 1
        assert report.decoder == H * W * cf.expert_per_pixel(in_dim, hidden_lists[only])
        assert report.expert_shares[only] == 1.0
    assert report.mapper == cf.mapper(h, w, in_channels=16, n_experts=J, **MAPPER) == model.mapper_macs((h, w))
    skip = cf.lte((h, w), (H, W), 16, 32, HIDDEN)["skip"] if "lte" in name else 0
    assert report.by_operator["grid_sampler"] == cf.logit_sampling(H * W, J) + skip
    assert report.encoder == cf.edsr_encoder(h, w, n_resblocks=2, n_feats=16, elementwise=True)
    assert report.total == report.encoder + report.mapper + report.decoder + report.other


def test_mapper_is_counted_even_when_routing_ignores_it(reports):
    """At knob ±inf the mapper's output does not reach the image, but upscale still runs it."""
    assert reports("moeisr-liif", math.inf, image=False).mapper > 0
    assert reports("moeisr-liif", math.inf, image=False).to_dict() == {
        **reports("moeisr-liif", math.inf).to_dict(),
        "routing": "content-independent (knob ±inf)",
    }


def test_counts_are_deterministic_and_content_independent_for_liif(lr, reports):
    first = reports("moeisr-lte", 0.0).to_dict()
    again = count(build("moeisr-lte"), None, SCALE, image=lr, routing_knob=0.0, chunk_size=CHUNK).to_dict()
    assert first == again
    synthetic = count(build("liif"), tuple(lr.shape[-2:]), SCALE, chunk_size=CHUNK)
    assert synthetic.to_dict() == reports("liif").to_dict()


def test_mac_components_do_not_depend_on_the_chunk_size(lr, reports):
    """Only the per-chunk coordinate set-up (O(h + w) element-wise FLOPs per chunk) varies."""
    chunked = reports("moeisr-lte", 0.0)
    whole = count(build("moeisr-lte"), None, SCALE, image=lr, routing_knob=0.0, chunk_size=10**6)
    for key in ("encoder", "mapper", "decoder", "per_expert", "expert_queries"):
        assert getattr(whole, key) == getattr(chunked, key)
    assert whole.other_parts["backbone.phase"] == chunked.other_parts["backbone.phase"]
    assert 0 <= chunked.total - whole.total <= 1e-4 * whole.total


def test_only_documented_ops_are_zero(reports, mixed_knobs):
    names = [("liif", None), ("lte", None), ("moeisr-liif", mixed_knobs["moeisr-liif"]), ("moeisr-lte", 0.0)]
    for name, knob in names:
        report = reports(name, knob)
        assert report.uncounted_ops == {}, name
        assert {op.removeprefix("aten::") for op in report.zero_cost_ops} <= set(ZERO_COST_OPS)
        assert "aten::as_strided" not in report.zero_cost_ops  # the liveness anchors are not reported
    # fvcore's own silent zero list is part of our documented allow-list (a private name, pinned fvcore)
    fvcore_zero = {op.removeprefix("aten::") for op in jit_analysis._IGNORED_OPS}
    assert fvcore_zero <= set(ZERO_COST_OPS)


def test_report_serialises_and_sums(reports):
    report = reports("moeisr-lte", -math.inf)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["routing_knob"] == "-inf" and data["convention"].startswith("GFLOPs, fvcore")
    assert data["total"] == data["encoder"] + data["mapper"] + data["decoder"] + data["other"]
    assert data["other"] == sum(data["other_parts"].values())
    assert math.isclose(sum(data["expert_shares"]), 1.0)
    assert data["lr_size"] == [24, 20] and data["out_size"] == [48, 40] and data["scale"] == 2.0


def test_training_mode_is_traced_in_eval_and_restored(lr):
    model = build("moeisr-liif").train()
    report = count(model, None, SCALE, image=lr, routing_knob=math.inf, chunk_size=CHUNK)
    assert model.training
    assert report.expert_queries[0] == report.out_size[0] * report.out_size[1]  # sparse eval routing


def test_errors_are_user_errors(lr):
    moe, liif = build("moeisr-liif"), build("liif")
    with pytest.raises(UserError, match="depend on the image"):
        count(moe, (8, 8), 2, routing_knob=0.0)
    with pytest.raises(UserError, match="does not match"):
        count(liif, (8, 8), 2, image=lr)
    with pytest.raises(UserError, match="MoEISR models only"):
        count(liif, (8, 8), 2, routing_knob=1.0)
    with pytest.raises(UserError, match="NaN"):
        count(moe, None, 2, image=lr, routing_knob=math.nan)
    for scale in (0.5, 0, -1, math.inf, math.nan, "x"):
        with pytest.raises(UserError, match="scale"):
            count(liif, (8, 8), scale)
    with pytest.raises(UserError, match="in \\[0, 1\\]"):
        count(liif, None, 2, image=lr * 2)
    with pytest.raises(UserError, match="lr_size"):
        count(liif, (0, 8), 2)


@pytest.mark.parametrize("name", SPECS)
def test_the_executed_path_is_counted_exactly(name, lr, out_size, reports, mixed_knobs):
    """`using_decoder_path(model, "as_executed")` counts what upscale runs by default: LIIF's per-LR-pixel
    projection and fewer MACs per input, LTE's basis inside the MLPs, no ×1 in EDSR, no eval softmax; the
    routing (pixels per expert) is the published one. The published counts are the ones pinned above."""
    knob = mixed_knobs.get(name)
    model = build(name)
    with using_decoder_path(model, "as_executed"):
        report = count(model, None, SCALE, image=lr, routing_knob=knob, chunk_size=CHUNK)
    published = reports(name, knob)
    assert report.path.startswith("as executed") and published.path.startswith("as published")
    assert report.uncounted_ops == {}
    (h, w), (H, W) = report.lr_size, report.out_size
    assert report.encoder == published.encoder - h * w * 16 * 2  # the two multiplies by res_scale = 1
    assert report.mapper == published.mapper
    mlps = list(model.experts) if isinstance(model, MoEISR) else [model.imnet]
    queries = report.expert_queries if isinstance(model, MoEISR) else [H * W]
    if isinstance(model, MoEISR):
        assert report.expert_queries == published.expert_queries and sum(queries) == H * W
        assert published.by_operator["softmax"] == 3 * H * W * model.n_experts
        assert report.by_operator.get("softmax", 0) == 0
    expected = []
    for mlp, n in zip(mlps, queries, strict=True):
        hidden = [layer.out_features for layer in mlp.layers if isinstance(layer, torch.nn.Linear)][:-1]
        if "liif" in name:
            in_dim = 16 * 9 + 4
            projection = cf.liif_projection(h * w, in_dim, hidden[0]) if n else 0
            expected.append(projection + n * 4 * cf.liif_executed_per_input(in_dim, hidden))
        else:
            expected.append(n * 4 * (cf.mlp_macs(32, hidden) + cf.lte_basis_executed(32)))
    assert report.decoder == sum(expected)
    if isinstance(model, MoEISR):
        assert report.per_expert == expected
