"""LMF (LM-LIIF, LM-LTE): the official checkpoints reproduce the official outputs, CMSR and its knob, FLOPs by
component against the closed forms, and the encoder-only start from a trained LIIF/LTE.

Reference data: ../shared/reference/lmf (beside the data root, `moeisr.data.roots.data_root().parent`), made with
the official code (its README.md says how). The tests fail, never skip, when it is missing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from moeisr import load_model
from moeisr.config import load_experiment
from moeisr.coords import make_cell, make_coord
from moeisr.data.degrade import downsample
from moeisr.data.images import load_image
from moeisr.data.roots import data_root
from moeisr.errors import UserError
from moeisr.flops import closed_form as cf
from moeisr.flops import count
from moeisr.models.checkpoint import save_checkpoint
from moeisr.models.lmf import CMSRTable, build_cmsr_table
from moeisr.models.lmf import lmliif as lmliif_module
from moeisr.models.lmf.cmsr import OFFICIAL_MSE, FixedThresholds, levels_for
from moeisr.registry import models
from moeisr.train.loop import build_model, initialise_from_parent

MODELS = ("lmliif", "lmlte")
SCALES = ("2.0", "3.3", "8.0")
EXPERIMENTS = {"lm_liif": "liif_converged", "lm_lte": "lte_converged"}
EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"


def reference_dir() -> Path:
    folder = data_root().parent / "reference" / "lmf"
    assert folder.is_dir(), f"LMF reference data missing: {folder} (see ../shared/reference/lmf/README.md)"
    return folder


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def official():
    """The official checkpoints, loaded once: {"lmliif": model, "lmlte": model}."""
    return {name: load_model(reference_dir() / f"official_{name}.pth") for name in MODELS}


def reference(name: str, scale: str) -> dict:
    return torch.load(reference_dir() / f"official_{name}_x{scale}.pt", weights_only=True)


# ------------------------------------------------------------------------------------- official outputs
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", MODELS)
def test_official_checkpoint_reproduces_the_official_output(official, name, scale):
    ref = reference(name, scale)
    model = official[name]
    out = model.upscale(ref["lr"], tuple(ref["size"]))
    assert out.shape == ref["sr"].shape
    diff = (out - ref["sr"]).abs().max().item()
    assert diff <= 1e-4, f"{name} x{scale}: max abs diff {diff:.3g}"
    # measured: 3.6e-7 (LM-LIIF), 9.5e-7 (LM-LTE)


@pytest.mark.parametrize("name", MODELS)
def test_forward_with_gradients_is_the_same_function_and_trains(official, name):
    """The training path (gradients on, out-of-place modulations) gives the official values and its gradients
    reach the encoder, the latent MLP and the render MLP."""
    ref = reference(name, "3.3")
    model = official[name]
    H, W = ref["size"]
    coord = make_coord((H, W)).unsqueeze(0)[:, :2000]
    cell = make_cell(coord, (H, W))
    pred = model(ref["lr"], coord, cell)
    expected = ref["sr"].flatten(2).transpose(1, 2)[:, :2000]
    assert (pred.clamp(0, 1) - expected).abs().max().item() <= 1e-4
    pred.abs().mean().backward()
    for part in (model.encoder, model.hypernet, model.imnet):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.zero_grad(set_to_none=True)


def test_names_aliases_specs_and_round_trip(official, tmp_path):
    model = official["lmliif"]
    assert models.get("lmliif") is models.get("lm-liif") and models.get("lmlte") is models.get("lm-lte")
    assert model.spec["name"] == "lm-liif" and official["lmlte"].spec["name"] == "lm-lte"
    assert model.hypernet.layers[0].in_features == 64 * 9 + 2 and model.latent_out_dim == 2 * 16 * 6 + 16
    assert official["lmlte"].latent_out_dim == 2 * 16 * 8 + 2 * 16
    ref = reference("lmliif", "2.0")
    loaded = load_model(save_checkpoint(tmp_path / "lm.pt", model))
    assert loaded.spec == model.spec
    assert torch.equal(loaded.upscale(ref["lr"], ref["size"]), model.upscale(ref["lr"], ref["size"]))


def test_latent_state_is_cached_per_cell(official):
    """One latent MLP evaluation per image and cell: a query with another cell gets its own modulations."""
    model = official["lmliif"]
    lr = reference("lmliif", "2.0")["lr"]
    coord = make_coord((30, 30)).unsqueeze(0)
    with torch.no_grad():
        features = model.encode(lr)
        a = model.query(features, coord, make_cell(coord, (30, 30)))
        state = features["lmf_latent"]
        b = model.query(features, coord, make_cell(coord, (90, 90)))
        assert features["lmf_latent"] is not state
        fresh = model.query(model.encode(lr), coord, make_cell(coord, (90, 90)))
        assert torch.equal(b, fresh) and not torch.equal(a, b)


def test_strips_of_the_latent_mlp_give_the_same_modulations(official, monkeypatch):
    ref = reference("lmliif", "3.3")
    model = official["lmliif"]
    whole = model.upscale(ref["lr"], ref["size"])
    monkeypatch.setattr(lmliif_module, "LATENT_STRIP_BYTES", 1)  # one LR row per strip
    assert (model.upscale(ref["lr"], ref["size"]) - whole).abs().max().item() <= 1e-6


# ------------------------------------------------------------------------------------------------ CMSR
@pytest.fixture(scope="module")
def calibration() -> list[torch.Tensor]:
    """Three real BSD200 training images, downsampled x4 and cropped to 40×40 LR."""
    folder = data_root() / "train" / "BSD200"
    return [downsample(load_image(folder / f"{n}.webp"), 4)[:, :40, :40] for n in ("100075", "100080", "100098")]


@pytest.fixture(scope="module")
def test_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """(LR 1×3×40×30, HR 1×3×320×240): a Set14 'comic' crop and its x8 MATLAB-bicubic downsample."""
    hr = load_image(data_root() / "benchmark" / "Set14" / "HR" / "comic.webp")[:, :320, :240]
    return downsample(hr, 8).unsqueeze(0), hr.unsqueeze(0)


@pytest.fixture(scope="module")
def tables(official, calibration):
    return {name: build_cmsr_table(official[name], calibration, target_scales=(6, 8)) for name in MODELS}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10((a - b).pow(2).mean().item())


def test_table_walk_by_hand():
    """Thresholds: per decode scale, from the first bin not yet given to a lower scale, over bins within the MSE
    threshold (empty bins passed over), up to the first failing bin; t of the previous scale when none passes."""
    nan = math.nan
    table = CMSRTable(
        edges={8.0: [0.0, 0.1, 0.2, 0.3, 0.4]},
        worst={8.0: {1.0: [1e-6, nan, 3e-5, 1e-6], 2.0: [1e-7, nan, 5e-6, 9e-5], 4.0: [0, 0, 9e-5, 9e-5]}},
    )
    assert table.thresholds(2e-5) == {8.0: {1.0: 0.1, 2.0: 0.3, 4.0: 0.3}}
    assert table.thresholds(1e-4) == {8.0: {1.0: 0.4, 2.0: 0.4, 4.0: 0.4}}
    assert table.thresholds(1e-9) == {8.0: {1.0: 0.0, 2.0: 0.0, 4.0: 0.2}}  # an MSE of 0 passes any threshold
    assert CMSRTable.from_dict(table.to_dict()).thresholds(2e-5) == table.thresholds(2e-5)
    # official lookup: the table of the first target >= the scale; its decode scales below the scale
    assert levels_for({6.0: {1.0: 0.1, 4.0: 0.2}, 12.0: {1.0: 0.3, 8.0: 0.4}}, 7.5) == [(1.0, 0.3)]
    assert levels_for({6.0: {1.0: 0.1, 4.0: 0.2}}, 16.0) == [(1.0, 0.1), (4.0, 0.2)]


@pytest.mark.parametrize("name", MODELS)
def test_cmsr_off_zero_or_in_distribution_is_the_plain_output(official, tables, test_pair, name):
    model = official[name]
    lr, _ = test_pair
    plain8, plain4 = model.upscale(lr, (320, 240)), model.upscale(lr, (160, 120))
    try:
        model.cmsr_table = tables[name]
        assert model.cmsr_mse is None and torch.equal(model.upscale(lr, (320, 240)), plain8)  # off by default
        for knob in (0.0, 1e-12):  # 0 = off; a threshold no bin meets leaves no pixel below the target
            assert torch.equal(model.upscale(lr, (320, 240), cmsr_mse=knob), plain8)
        assert torch.equal(model.upscale(lr, (160, 120), cmsr_mse=1.0), plain4)  # x4: not out of distribution
    finally:
        model.cmsr_table = None


@pytest.mark.parametrize("name", MODELS)
def test_cmsr_saves_render_flops_and_stays_close(official, tables, test_pair, name):
    """At the official MSE threshold (2e-5 on [-1, 1] images), x8 on a real image: the counted render MLP FLOPs
    drop, the output stays close to the full render, and the PSNR against the HR image barely moves.
    (The checkpoints have random weights, so the PSNRs against HR are low; what is tested is the closeness.)"""
    model = official[name]
    lr, hr = test_pair
    plain = model.upscale(lr, (320, 240))
    full = count(model, None, 8, image=lr)
    try:
        model.cmsr_table, model.cmsr_mse = tables[name], OFFICIAL_MSE
        out = model.upscale(lr, (320, 240))
        saved = count(model, None, 8, image=lr)
        with pytest.raises(UserError, match="depend on the image"):
            count(model, (40, 30), 8)
    finally:
        model.cmsr_table, model.cmsr_mse = None, None
    assert saved.routing.startswith("CMSR") and saved.uncounted_ops == {}
    assert saved.encoder == full.encoder and saved.latent == full.latent
    assert saved.decoder <= 0.5 * full.decoder  # measured: 13% (LM-LIIF), 14% (LM-LTE) of the full render
    assert psnr(out, plain) >= 38  # measured: 40.1 dB (LM-LIIF), 54.4 dB (LM-LTE)
    assert abs(psnr(out, hr) - psnr(plain, hr)) <= 0.1


def test_official_cmsr_spec_and_fixed_thresholds(official, tables, test_pair):
    """An official-format cmsr_spec (fixed s2m tables) in the model args turns CMSR on with those thresholds."""
    name = "lmliif"
    lr, _ = test_pair
    spec = tables[name].official_spec(OFFICIAL_MSE)
    args = {**official[name].spec["args"], "cmsr_spec": spec}
    model = models.make({"name": "lmliif", "args": args})
    model.load_state_dict(official[name].state_dict())
    model.eval()
    assert isinstance(model.cmsr_table, FixedThresholds) and model.cmsr_mse == OFFICIAL_MSE
    ref = official[name]
    try:
        ref.cmsr_table, ref.cmsr_mse = tables[name], OFFICIAL_MSE
        expected = ref.upscale(lr, (320, 240))
    finally:
        ref.cmsr_table, ref.cmsr_mse = None, None
    assert (model.upscale(lr, (320, 240)) - expected).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="build_cmsr_table"):
        models.make({"name": "lmliif", "args": {**args, "cmsr_spec": {**spec, "updating_scale": 8}}})


# ----------------------------------------------------------------------------------------------- FLOPs
@pytest.fixture(scope="module")
def flops_lr() -> torch.Tensor:
    """A real 24×20 LR patch: Set14 'comic' downsampled ×4, as in tests/test_flops.py."""
    hr = load_image(data_root() / "benchmark" / "Set14" / "HR" / "comic.webp")
    return downsample(hr, 4)[:, 20:44, 10:30].unsqueeze(0).contiguous()


@pytest.mark.parametrize("name", MODELS)
def test_fvcore_components_equal_the_closed_forms(official, flops_lr, name):
    model = official[name]
    report = count(model, None, 3, image=flops_lr)
    (h, w), (H, W) = report.lr_size, report.out_size
    assert report.uncounted_ops == {}
    assert report.total == report.encoder + report.mapper + report.latent + report.decoder + report.other
    assert report.encoder == cf.edsr_encoder(h, w, elementwise=True)
    if name == "lmliif":
        parts = cf.lm_liif((h, w), (H, W))
        assert report.other_parts.keys() == {"unscoped"}
    else:
        parts = cf.lm_lte((h, w), (H, W))
        assert report.other_parts["coef"] + report.other_parts["freq"] == parts["coef_freq"]
        assert report.other_parts["phase"] == parts["phase"] and report.other_parts["imphase"] == parts["imphase"]
    assert report.latent == parts["latent"]
    assert report.decoder == parts["render"]
    # matrix products and convolutions agree with torch's FlopCounterMode (which counts 2 per MAC)
    with FlopCounterMode(display=False) as mode:
        model.upscale(flops_lr, (H, W))
    macs = sum(v for op, v in report.by_operator.items() if op in ("conv", "linear", "addmm", "mm", "matmul"))
    assert macs == mode.get_total_flops() / 2


def test_per_image_flops_fit_lmf(official, flops_lr):
    """The evaluation grid's per-image FLOPs (a size model fitted on tiny outputs) equal a full count for LMF."""
    from moeisr.flops.per_image import PerImageFlops

    model = official["lmliif"]
    per_image = PerImageFlops()
    flops, shares = per_image(model, flops_lr, 3.7, None)
    assert per_image.size_model(model) is not None and shares is None
    assert flops == count(model, None, 3.7, image=flops_lr, chunk_size=1 << 20).total


def test_the_48x48_x4_figures():
    """The official EDSR-baseline configs at 48×48 → 192×192 (docs/lmf.md)."""
    liif, lte = cf.lm_liif((48, 48), (192, 192)), cf.lm_lte((48, 48), (192, 192))
    assert cf.lmf_render_per_input(20, 16, 6) == 20 * 16 + 5 * 16 * 16 + 16 * 3 + 2 * 16 * 6 == 1840
    assert liif == {"latent": 2304 * (578 * 208 + 208 * 208), "render": 192 * 192 * 4 * 1840}
    assert (liif["latent"], liif["render"]) == (376_676_352, 271_319_040)
    assert (lte["latent"], lte["render"], lte["coef_freq"]) == (276_037_632, 346_816_512, 339_738_624)
    assert cf.edsr_encoder(48, 48, elementwise=True) == 2_811_691_008


# ------------------------------------------------------------------------------------ init from parents
@pytest.mark.parametrize("profile", ("smoke", "cpu", "paper"))
@pytest.mark.parametrize(("name", "parent"), EXPERIMENTS.items())
def test_experiments_start_from_the_converged_backbones_encoder(name, parent, profile):
    experiment = load_experiment(EXPERIMENTS_DIR / f"{name}.yaml", profile)
    assert experiment.init_from == parent and experiment.parent.name == parent
    assert experiment.model.args["encoder_spec"] == experiment.parent.model.args["encoder_spec"]
    assert experiment.model.name == name.replace("_", "-")


@pytest.mark.parametrize(("name", "parent"), EXPERIMENTS.items())
def test_initialise_from_a_different_model_copies_the_encoder_only(name, parent, tmp_path):
    experiment = load_experiment(EXPERIMENTS_DIR / f"{name}.yaml", "smoke")
    torch.manual_seed(1)
    backbone = build_model(experiment.parent)
    ckpt = save_checkpoint(tmp_path / "final.pt", backbone)
    torch.manual_seed(2)
    model = build_model(experiment)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    initialise_from_parent(model, ckpt)
    after = model.state_dict()
    for key, value in after.items():
        if key.startswith("encoder."):
            assert torch.equal(value, backbone.state_dict()[key]), key
        else:
            assert torch.equal(value, before[key]), key
    assert not torch.equal(after["encoder.head.0.weight"], before["encoder.head.0.weight"])


def test_initialise_from_a_different_model_with_another_encoder_is_refused(tmp_path):
    smoke = load_experiment(EXPERIMENTS_DIR / "lm_liif.yaml", "smoke")
    cpu_parent = build_model(load_experiment(EXPERIMENTS_DIR / "liif_converged.yaml", "cpu"))
    ckpt = save_checkpoint(tmp_path / "final.pt", cpu_parent)
    with pytest.raises(UserError, match="encoder does not match"):
        initialise_from_parent(build_model(smoke), ckpt)


def test_per_image_flops_with_the_cmsr_knob_trace_the_image(official, tables, test_pair):
    """A CMSR knob row of the grid counts what CMSR renders on that image (fewer FLOPs than CMSR off at ×8), the
    same as a full count with the knob set, and leaves the model's own knob as it was."""
    from moeisr.flops.per_image import PerImageFlops

    model = official["lmlte"]
    lr, _ = test_pair
    per_image = PerImageFlops()
    off, _ = per_image(model, lr, 8, None)
    try:
        model.cmsr_table = tables["lmlte"]
        on, shares = per_image(model, lr, 8, OFFICIAL_MSE)
        assert model.cmsr_mse is None  # restored
        model.cmsr_mse = OFFICIAL_MSE
        assert on == count(model, None, 8, image=lr, chunk_size=1 << 20).total
    finally:
        model.cmsr_table, model.cmsr_mse = None, None
    assert shares is None and on < off


def test_encoder_flops_per_lr_pixel_is_the_closed_form(official, flops_lr):
    from moeisr.flops.per_image import encoder_flops_per_lr_pixel

    h, w = 12, 12
    assert encoder_flops_per_lr_pixel(official["lmliif"]) == cf.edsr_encoder(h, w, elementwise=True) / (h * w)


def test_a_calibrated_table_in_the_spec_round_trips_with_cmsr_off(official, tables, test_pair, tmp_path):
    """The bundled form (`cmsr_spec: {table: ...}`, moeisr.train.calibrate) loads with the table and CMSR off; the
    knob then turns it on, giving the same output as setting the table by hand."""
    model = official["lmlte"]
    calibrated = {"table": tables["lmlte"].to_dict(), "mse_threshold": None}
    spec = {"name": model.spec["name"], "args": {**model.spec["args"], "cmsr_spec": calibrated}}
    path = save_checkpoint(tmp_path / "calibrated.pt", model, spec=spec)
    loaded = load_model(path)
    lr, _ = test_pair
    assert loaded.cmsr_mse is None and loaded.cmsr_table is not None
    assert torch.equal(loaded.upscale(lr, (320, 240)), model.upscale(lr, (320, 240)))  # off: the plain output
    loaded.cmsr_mse = OFFICIAL_MSE
    try:
        model.cmsr_table, model.cmsr_mse = tables["lmlte"], OFFICIAL_MSE
        assert torch.equal(loaded.upscale(lr, (320, 240)), model.upscale(lr, (320, 240)))
    finally:
        model.cmsr_table, model.cmsr_mse = None, None
