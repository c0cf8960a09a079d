"""The "as executed" inference path equals the paper-faithful one, on real Set14 crops.

LIIF's first MLP layer is split into a per-LR-pixel projection and a per-query tail (moeisr.models.mlp,
docs/speed.md); LTE's Fourier basis is built block by block inside the MLP's first layer (FourierInputs);
the results must agree with the published path to 1e-5 for every LIIF setting, for LTE, for MoEISR-LIIF and
MoEISR-LTE at several routing knobs and for scales up to ×12, while training stays on the published path.
The models have the real decoder widths (64-channel features, 256-wide MLPs: the rounding differences
grow with the widths) on a shallow encoder, to stay fast.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from test_models_support import lr_crop

from moeisr.coords import make_cell, make_coord
from moeisr.errors import UserError
from moeisr.models.base import (
    InferenceCache,
    output_size,
    prepare_for_inference,
    upscale,
    using_decoder_path,
)
from moeisr.models.decoders.lte import FourierInputs
from moeisr.models.mlp import FactoredInputs
from moeisr.models.moe.moeisr import init_from_backbone
from moeisr.models.moe.routing import dense_dispatch, sparse_dispatch
from moeisr.registry import models

TOL = 1e-5
ENCODER = {"name": "edsr-baseline", "args": {"n_resblocks": 2, "n_feats": 64, "no_upsampling": True}}


def liif_spec(hidden=(256, 256, 256, 256), **args):
    mlp = {"name": "mlp", "args": {"out_dim": 3, "hidden_list": list(hidden)}}
    return {"name": "liif", "args": {"encoder_spec": ENCODER, "imnet_spec": mlp, **args}}


def lte_spec():
    mlp = {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256]}}
    return {"name": "lte", "args": {"encoder_spec": ENCODER, "imnet_spec": mlp, "hidden_dim": 256}}


def both_paths(model, lr, size, **kwargs):
    with using_decoder_path(model, "as_published"):
        published = model.upscale(lr, size, **kwargs)
    executed = model.upscale(lr, size, **kwargs)  # "auto": executed inside upscale
    return published, executed


@pytest.mark.parametrize(
    ("local_ensemble", "feat_unfold", "cell_decode"), list(itertools.product([True, False], repeat=3))
)
def test_liif_executed_equals_published_for_every_setting(local_ensemble, feat_unfold, cell_decode):
    model = models.make(liif_spec(local_ensemble=local_ensemble, feat_unfold=feat_unfold, cell_decode=cell_decode))
    lr = lr_crop("zebra", h=20, w=18)
    published, executed = both_paths(model.eval(), lr, output_size((20, 18), 2.7))
    assert (published - executed).abs().max().item() <= TOL
    assert not torch.equal(published, executed)  # two different computations, not one path twice


@pytest.mark.parametrize("scale", [2, 3.4, 4, 12])
def test_liif_executed_equals_published_across_scales(scale):
    model = models.make(liif_spec()).eval()
    lr = lr_crop("baboon", top=20, left=30, h=16, w=15)
    published, executed = both_paths(model, lr, output_size((16, 15), scale))
    assert (published - executed).abs().max().item() <= TOL


def test_liif_executed_equals_published_on_a_batch_with_chunks_and_cell_clamp():
    model = models.make(liif_spec()).eval()
    lr = torch.cat([lr_crop("comic"), lr_crop("monarch", top=40, left=40)])  # B=2, 24×20 each
    size = output_size((24, 20), 5.3)
    published, executed = both_paths(model, lr, size, chunk_size=997, cell_clamp=4.0)
    assert (published - executed).abs().max().item() <= TOL


def test_moeisr_liif_executed_equals_published_at_several_knobs():
    torch.manual_seed(0)
    backbone = models.make(liif_spec())
    moe = init_from_backbone(models.make({"name": "moeisr", "args": {"backbone_spec": liif_spec()}}), backbone).eval()
    lr = lr_crop("lenna", top=60, left=60, h=18, w=16)
    size = output_size((18, 16), 3.3)
    mixes = set()
    budget = moe.knob_for_budget(lr, size, 0.7)
    for knob in (math.inf, -math.inf, 0.0, budget):
        published, executed = both_paths(moe, lr, size, routing_knob=knob, chunk_size=2000)
        assert (published - executed).abs().max().item() <= TOL, knob
        shares = torch.bincount(moe.expert_map(lr, size, routing_knob=knob).reshape(-1), minlength=4)
        mixes.add(tuple((shares > 0).tolist()))
    assert len(mixes) >= 3  # the knobs really exercise different expert mixes, incl. a mixed routing
    # ×12 with a mixed routing
    published, executed = both_paths(moe, lr[..., :10, :9], (120, 108), routing_knob=budget)
    assert (published - executed).abs().max().item() <= TOL


def _count_calls(monkeypatch, cls) -> list[str]:
    seen: list[str] = []
    original = cls.first_layer

    def spy(self, *args):
        seen.append(cls.__name__)
        return original(self, *args)

    monkeypatch.setattr(cls, "first_layer", spy)
    return seen


def test_lte_executed_equals_published(monkeypatch):
    """LTE: the basis built in place by FourierInputs, across scales, a batch with chunks and cell clamp."""
    torch.manual_seed(0)
    lte = models.make(lte_spec()).eval()
    seen = _count_calls(monkeypatch, FourierInputs)
    lr = lr_crop("pepper", h=14, w=16)
    for scale in (2, 3.4, 4, 12):
        published, executed = both_paths(lte, lr, output_size((14, 16), scale))
        assert (published - executed).abs().max().item() <= TOL, scale  # in fact bitwise equal here
    assert seen  # the executed path really built the basis in the MLP's first layer
    batch = torch.cat([lr_crop("comic"), lr_crop("monarch", top=40, left=40)])  # B=2, 24×20 each
    published, executed = both_paths(lte, batch, output_size((24, 20), 5.3), chunk_size=997, cell_clamp=4.0)
    assert (published - executed).abs().max().item() <= TOL


def test_lte_executed_query_with_a_per_query_cell():
    """A cell that varies over the queries (not upscale's constant one) gets one phase per query."""
    torch.manual_seed(0)
    lte = models.make(lte_spec()).eval()
    lr = lr_crop("lenna", h=12, w=13)
    coord = make_coord((30, 31)).unsqueeze(0)
    cell = make_cell(coord, (30, 31)) * torch.linspace(0.5, 2.0, 30 * 31).view(1, -1, 1)
    with torch.no_grad():
        published = lte.query(lte.encode(lr), coord, cell)
        with using_decoder_path(lte, "as_executed"):
            features = lte.encode(lr)
            inputs, _ = lte.fourier_inputs(features, coord, cell)
            assert inputs.phase.shape == (30 * 31, 128)
            executed = lte.query(features, coord, cell)
    assert (published - executed).abs().max().item() <= TOL


def test_lte_basis_is_bitwise_the_published_input():
    """The basis rows themselves: the same arithmetic in the same order as decoder_inputs (only the phase of a
    constant cell is computed once, so it is compared with a per-query cell here). The rows live in the
    per-image buffers, so the first result is copied before the next call overwrites it."""
    torch.manual_seed(0)
    lte = models.make(lte_spec()).eval()
    lr = lr_crop("zebra", h=10, w=12)
    coord = make_coord((23, 25)).unsqueeze(0)
    cell = make_cell(coord, (23, 25)) * torch.linspace(0.5, 2.0, 23 * 25).view(1, -1, 1)
    with torch.no_grad():
        features = lte.encode(lr)
        dense, _ = lte.decoder_inputs(features, coord, cell)
        inputs, _ = lte.fourier_inputs(features, coord, cell)
        rows = inputs.basis(inputs.pixels.reshape(-1), inputs.rel_coord.reshape(-1, 2), inputs.phase).clone()
        picked = inputs.take(torch.tensor([5, 0, 77]))
        sub = picked.basis(
            picked.pixels.index_select(0, picked.queries).reshape(-1),
            picked.rel_coord.index_select(0, picked.queries).reshape(-1, 2),
            picked.phase.index_select(0, picked.queries),
        )
    assert torch.equal(rows, dense.reshape(-1, dense.shape[-1]))
    assert torch.equal(sub, dense[0, [5, 0, 77]].reshape(-1, dense.shape[-1]))
    assert picked.shape == (3, 4, 256)
    # an executed-path encode stores the freq maps planar: the same inputs from either layout
    with torch.no_grad(), using_decoder_path(lte, "as_executed"):
        planar_features = lte.encode(lr)
        assert "coef_freq_planar" in planar_features and "coef_freq" not in planar_features
        planar, _ = lte.fourier_inputs(planar_features, coord, cell)
        assert planar.planar and not inputs.planar
        planar_rows = planar.basis(planar.pixels.reshape(-1), planar.rel_coord.reshape(-1, 2), planar.phase)
        assert torch.equal(planar_rows, dense.reshape(-1, dense.shape[-1]))
        assert torch.equal(lte.decoder_inputs(planar_features, coord, cell)[0], dense)


def test_moeisr_lte_executed_equals_published_at_several_knobs(monkeypatch):
    torch.manual_seed(0)
    backbone = models.make(lte_spec())
    moe = init_from_backbone(models.make({"name": "moeisr", "args": {"backbone_spec": lte_spec()}}), backbone).eval()
    seen = _count_calls(monkeypatch, FourierInputs)
    lr = lr_crop("pepper", h=14, w=16)
    size = (37, 42)
    budget = moe.knob_for_budget(lr, size, 0.7)
    mixes = set()
    for knob in (math.inf, -math.inf, 0.0, budget):
        published, executed = both_paths(moe, lr, size, routing_knob=knob, chunk_size=500)
        assert (published - executed).abs().max().item() <= TOL, knob
        shares = torch.bincount(moe.expert_map(lr, size, routing_knob=knob).reshape(-1), minlength=moe.n_experts)
        mixes.add(tuple((shares > 0).tolist()))
    assert len(mixes) >= 3 and seen


@pytest.mark.parametrize(
    ("backbone_spec", "executed_inputs"),
    [(lte_spec(), "fourier_inputs"), (liif_spec(hidden=(64, 64, 64)), "factored_inputs")],
    ids=["lte-fourier", "liif-factored"],
)
def test_sparse_dispatch_of_executed_inputs_equals_dense_dispatch(backbone_spec, executed_inputs):
    """The experts on the backbone's "as executed" inputs (LTE's FourierInputs, LIIF's FactoredInputs), sparsely
    dispatched by a random assignment, equal the dense one-hot mixture on the published inputs."""
    torch.manual_seed(0)
    moe = models.make({"name": "moeisr", "args": {"backbone_spec": backbone_spec}}).eval()
    lr = lr_crop("foreman", h=15, w=17)
    coord = make_coord((33, 35)).unsqueeze(0)
    cell = make_cell(coord, (33, 35))
    with torch.no_grad():
        features = moe.encode(lr)
        executed, _ = getattr(moe.backbone, executed_inputs)(features, coord, cell)
        dense, _ = moe.backbone.decoder_inputs(features, coord, cell)
        assign = torch.randint(0, moe.n_experts, (1, coord.shape[1]), generator=torch.Generator().manual_seed(1))
        sparse = sparse_dispatch(list(moe.experts), executed, assign)
        reference = dense_dispatch(list(moe.experts), dense, torch.nn.functional.one_hot(assign, moe.n_experts).float())
    assert (sparse - reference).abs().max().item() <= TOL


def test_executed_moeisr_routing_skips_the_unused_softmax(monkeypatch):
    """Eval routing on the executed path leaves probs to be computed on demand; the assignment is the same."""
    torch.manual_seed(0)
    moe = models.make({"name": "moeisr", "args": {"backbone_spec": liif_spec(hidden=(32, 32))}}).eval()
    lr = lr_crop("man", h=12, w=12)
    coord = make_coord((30, 30)).unsqueeze(0)
    cell = make_cell(coord, (30, 30))
    with torch.no_grad():
        features = moe.encode(lr)
        _, published = moe.query_with_info(features, coord, cell)
        with using_decoder_path(moe, "as_executed"):
            _, executed = moe.query_with_info(features, coord, cell)
    assert published.probs is not None and executed.probs is None
    assert torch.equal(published.assign, executed.assign)
    assert torch.equal(executed.probabilities(), published.probs)


def _count_factored_calls(monkeypatch) -> list[str]:
    return _count_calls(monkeypatch, FactoredInputs)


def test_training_and_direct_queries_take_the_published_path(monkeypatch):
    torch.manual_seed(0)
    model = models.make({"name": "moeisr", "args": {"backbone_spec": liif_spec(hidden=(64, 64))}})
    lr = lr_crop("flowers", h=12, w=12)
    coord = make_coord((30, 30)).unsqueeze(0)
    cell = make_cell(coord, (30, 30))
    seen = _count_factored_calls(monkeypatch)
    pred, _ = model.forward_train(lr, coord, cell, generator=torch.Generator().manual_seed(0))
    pred.mean().backward()
    assert all(p.grad is not None for p in model.experts.parameters())
    with torch.no_grad():
        model.eval()
        model(lr, coord, cell)  # forward outside upscale: published under "auto"
    assert seen == [] and not model.backbone.uses_executed_path()
    model.upscale(lr, (30, 30))
    assert seen  # upscale takes the executed path


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_decoder_path_switch(monkeypatch):
    model = models.make({"name": "moeisr", "args": {"backbone_spec": liif_spec(hidden=(32,))}}).eval()
    assert model.decoder_path == "auto" and model.backbone.decoder_path == "auto"
    model.decoder_path = "as_published"
    assert model.backbone.decoder_path == "as_published"  # propagates to the backbone
    assert not any("decoder_path" in k for k in model.state_dict()) and "decoder_path" not in str(model.spec)
    with using_decoder_path(model, "as_executed"):
        assert model.backbone.uses_executed_path()
    assert model.backbone.decoder_path == "as_published"  # restored
    with pytest.raises(UserError, match="decoder_path"):
        model.decoder_path = "fast"
    model.decoder_path = "auto"

    # a jit trace of upscale (what fvcore's FLOPs count does) stays on the published path under "auto"
    class Upscale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.upscale(x, (20, 20))

    seen = _count_factored_calls(monkeypatch)
    lr = lr_crop(h=8, w=8)
    torch.jit.trace(Upscale(), (lr,), check_trace=False)
    assert seen == []
    with using_decoder_path(model, "as_executed"):  # what the FLOPs count needs for the executed path
        torch.jit.trace(Upscale(), (lr,), check_trace=False)
    assert seen


def test_explicit_executed_path_on_direct_queries_and_other_mlps():
    model = models.make(liif_spec(hidden=(64, 64))).eval()
    lr = lr_crop("man", h=16, w=16)
    coord = make_coord((40, 40)).unsqueeze(0)
    cell = make_cell(coord, (40, 40))
    shapes = []

    def spy(x):
        shapes.append(tuple(x.shape))
        return model.imnet(x)

    with torch.no_grad():
        published = model.query(model.encode(lr), coord, cell)
        with using_decoder_path(model, "as_executed"):
            features = model.encode(lr)
            assert "feat_table" not in features  # no 9× unfolded table on the executed path
            executed = model.query(features, coord, cell)
            dense = model.query(features, coord, cell, mlp=spy)  # an mlp without factored support: dense rows
    assert shapes == [(1, 1600, 4, model.imnet_in_dim)]
    assert (executed - published).abs().max().item() <= TOL
    assert torch.allclose(dense, published, atol=1e-6, rtol=0)


def test_mlp_inference_forward_is_bitwise_the_plain_forward():
    torch.manual_seed(0)
    mlp = models.make({"name": "mlp", "args": {"in_dim": 580, "out_dim": 3, "hidden_list": [256, 256]}})
    x = torch.rand(2, 300, 4, 580)
    with torch.no_grad():
        fast = mlp(x)  # gradients off: buffers and in-place ReLUs
    assert torch.equal(fast, mlp(x).detach())


def test_inference_cache_hands_out_buffers_only_without_gradients():
    cache = InferenceCache()
    like = torch.zeros(1)
    assert cache.buffer("a", 10, 4, like) is None  # gradients on (tests run with grad enabled)
    with torch.no_grad():
        first = cache.buffer("a", 10, 4, like)
        again = cache.buffer("a", 6, 4, like)
        assert first.shape == (10, 4) and again.shape == (6, 4)
        assert again.data_ptr() == first.data_ptr()  # reused, not reallocated
    assert cache.memo("k", lambda: torch.ones(2)) is cache.memo("k", lambda: torch.zeros(2))


def test_prepare_for_inference_keeps_the_output_and_the_state_dict():
    """Channels-last encoder activations at inference; the parameters (layout included) are untouched."""
    torch.manual_seed(0)
    model = models.make({"name": "moeisr", "args": {"backbone_spec": liif_spec(hidden=(64, 64))}})
    model.set_routing_knob(math.inf)  # a content-independent routing: rounding cannot flip an expert here
    state = {k: v.clone() for k, v in model.state_dict().items()}
    lr = lr_crop("bridge", h=16, w=16)
    before = upscale(model.eval(), lr, (40, 40))
    after = upscale(prepare_for_inference(model), lr, (40, 40))
    assert not model.training and model.channels_last and model.backbone.channels_last
    assert all(v.is_contiguous() for v in model.state_dict().values())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert (before - after).abs().max().item() <= TOL
    with torch.no_grad():
        assert model.encode(lr)["feat"].is_contiguous(memory_format=torch.channels_last)
    lr.requires_grad_(False)
    assert model.backbone.encode(lr)["feat"].is_contiguous()  # with gradients on: the plain (training) layout


def test_executed_encoders_are_bitwise_the_official_forward():
    """EDSR's skipped ×1 and in-place sums, RDN's dense-block buffers: the same features bit for bit."""
    torch.manual_seed(0)
    encoders = [
        {"name": "edsr-baseline", "args": {"n_resblocks": 3, "n_feats": 32}},
        {"name": "edsr", "args": {"n_resblocks": 2, "n_feats": 16}},  # res_scale 0.1: the multiply stays
        {"name": "rdn", "args": {"G0": 16, "D": 3, "C": 3, "G": 8}},
    ]
    mlp = {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16]}}
    single = lr_crop("baboon", h=20, w=18) * 2 - 1
    batch = torch.cat([single, lr_crop("comic", h=20, w=18) * 2 - 1])  # RDN: B=2 takes the concatenating branch
    for encoder in encoders:
        model = models.make({"name": "liif", "args": {"encoder_spec": encoder, "imnet_spec": mlp}}).eval()
        model.encode_tile_size = None
        for inp in (single, batch):
            with torch.no_grad():
                official = model.encoder(inp)
                with using_decoder_path(model, "as_executed"):
                    executed = model.run_encoder(inp)
            assert torch.equal(official, executed), encoder["name"]
