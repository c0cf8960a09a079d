"""`moeisr sr`: real Set14 images through bicubic and a checkpoint; scale/size validation; default CKPT."""

import pytest
import torch
from PIL import Image
from test_models_support import read_image, set14, small_model

from moeisr.cli import main
from moeisr.models.checkpoint import save_checkpoint
from moeisr.registry import models


def run(*argv):
    return main(["sr", *map(str, argv)])


def test_bicubic_at_a_non_integer_scale(tmp_path):
    src = set14("face", "X4")  # 69×69
    out = tmp_path / "face.png"
    assert run("bicubic", src, "--scale", 3.7, "-o", out) == 0
    with Image.open(out) as im:
        assert im.size == (round(69 * 3.7), round(69 * 3.7))


def test_checkpoint_with_explicit_size_matches_the_library(tmp_path):
    model = small_model("lte")
    ckpt = save_checkpoint(tmp_path / "lte.pth", model)
    src = tmp_path / "crop.png"
    Image.open(set14("comic", "X4")).crop((0, 0, 30, 24)).save(src)
    out = tmp_path / "sr.png"
    assert run(ckpt, src, "--size", "75x61", "-o", out, "--chunk-size", 999) == 0
    written = read_image(out)
    expected = model.upscale(read_image(src), (61, 75))
    assert written.shape == (1, 3, 61, 75)
    assert (written - expected).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit rounding only


@pytest.mark.parametrize("scale", ["0", "-2", "nan", "inf", "0.5"])
def test_bad_scales_are_refused_in_one_line(tmp_path, capsys, scale):
    assert run("bicubic", set14("face", "X4"), "--scale", scale, "-o", tmp_path / "x.png") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moeisr sr: error: scale") and "\n" not in err


@pytest.mark.parametrize("size", ["10x", "0x20", "abc"])
def test_bad_sizes_are_refused(tmp_path, capsys, size):
    assert run("bicubic", set14("face", "X4"), "--size", size, "-o", tmp_path / "x.png") == 2
    assert "--size" in capsys.readouterr().err


def test_missing_default_checkpoint_says_how_to_pass_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("moeisr.data.roots.repo_root", lambda: tmp_path)  # hide the bundled checkpoints
    assert run(set14("face", "X4"), "--scale", 2, "-o", tmp_path / "x.png") == 2
    err = capsys.readouterr().err.strip()
    assert "no default checkpoint is available yet" in err and "moeisr sr CKPT" in err and "\n" not in err


def test_default_checkpoint_is_used_when_present(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("moeisr.data.roots.repo_root", lambda: tmp_path)
    save_checkpoint(tmp_path / "results" / "checkpoints" / "liif.pt", small_model("liif"))
    assert run(set14("face", "X4"), "--scale", 1.5, "-o", tmp_path / "x.png") == 0
    with Image.open(tmp_path / "x.png") as im:
        assert im.size == (round(69 * 1.5), round(69 * 1.5))


def test_the_bundled_default_checkpoint_beats_bicubic_on_a_shared_image(tmp_path, monkeypatch):
    """A newcomer's first command: no CKPT, the committed cpu-profile model, a real Set14 LR at ×4 and ×3.7."""
    from moeisr.commands.sr import default_checkpoint
    from moeisr.metrics import psnr

    monkeypatch.chdir(tmp_path)  # found through the checkout, not the working directory
    found = default_checkpoint()
    assert found is not None and found.name in ("moeisr_liif_v2.pt", "moeisr_liif.pt", "liif.pt")
    lr, hr = set14("comic", "X4"), read_image(set14("comic"))
    assert run(lr, "--scale", 4, "-o", tmp_path / "x4.png") == 0
    assert run("bicubic", lr, "--scale", 4, "-o", tmp_path / "bicubic.png") == 0
    ours, bicubic = (read_image(tmp_path / f"{n}.png") for n in ("x4", "bicubic"))
    assert ours.shape == (1, 3, 90 * 4, 62 * 4)
    hr = hr[..., : 90 * 4, : 62 * 4]  # the protocol's crop to a multiple of the scale
    assert psnr(ours, hr, 4).item() > psnr(bicubic, hr, 4).item() + 0.3
    assert run(lr, "--scale", 3.7, "-o", tmp_path / "x37.png") == 0
    with Image.open(tmp_path / "x37.png") as im:
        assert im.size == (round(62 * 3.7), round(90 * 3.7))


def test_missing_input_and_bad_output_extension(tmp_path, capsys):
    assert run("bicubic", tmp_path / "nope.png", "--scale", 2, "-o", tmp_path / "x.png") == 2
    assert "nope.png" in capsys.readouterr().err
    assert run("bicubic", set14("face", "X4"), "--scale", 2, "-o", tmp_path / "x.jpg") == 2
    assert "x.jpg" in capsys.readouterr().err


def test_encode_tile_size_tiles_the_encoder_and_keeps_the_output(tmp_path):
    """A 24×30 real crop encoded in 16-pixel tiles writes the same 8-bit image as untiled ('none')."""
    ckpt = save_checkpoint(tmp_path / "m.pth", small_model("liif"))
    src = tmp_path / "crop.png"
    Image.open(set14("comic", "X4")).crop((0, 0, 30, 24)).save(src)
    outs = {}
    for tile in ("16", "none"):
        outs[tile] = tmp_path / f"sr_{tile}.png"
        assert run(ckpt, src, "--scale", 2, "-o", outs[tile], "--encode-tile-size", tile) == 0
    assert torch.equal(read_image(outs["16"]), read_image(outs["none"]))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--chunk-size", "0"),
        ("--cell-clamp", "0.5"),
        ("--cell-clamp", "nan"),
        ("--encode-tile-size", "8"),
        ("--encode-tile-size", "big"),
    ],
)
def test_bad_knobs_are_refused(tmp_path, capsys, option, value):
    ckpt = save_checkpoint(tmp_path / "m.pth", small_model("liif"))
    assert run(ckpt, set14("face", "X4"), "--scale", 2, "-o", tmp_path / "x.png", option, value) == 2
    assert option in capsys.readouterr().err


def test_expert_map_and_routing_knob_of_a_moeisr_checkpoint(tmp_path, capsys):
    torch.manual_seed(0)
    backbone = small_model("liif", hidden=(32, 32, 32))
    moe = models.make(
        {"name": "moeisr", "args": {"backbone_spec": backbone.spec, "mapper": {"n_layers": 1, "width": 8}}}
    )
    ckpt = save_checkpoint(tmp_path / "moe.pt", moe)
    src = set14("face", "X4")  # 69×69
    out, emap = tmp_path / "sr.png", tmp_path / "map.png"
    assert run(ckpt, src, "--scale", 2.5, "-o", out, "--expert-map", emap, "--routing-knob", "inf") == 0
    printed = capsys.readouterr().out
    assert "expert 0 (yellow, hidden [32]): 100.0% of pixels" in printed
    with Image.open(emap) as im:
        assert im.size == (round(69 * 2.5), round(69 * 2.5))
        assert len(set(im.getdata())) == 1  # every pixel the cheapest expert's colour
    assert run(ckpt, src, "--scale", 2.5, "-o", out, "--expert-map", emap, "--routing-knob=-inf") == 0
    assert "expert 2 (blue, hidden [32, 32, 32]): 100.0% of pixels" in capsys.readouterr().out


def test_expert_map_needs_a_moeisr_checkpoint(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "liif.pt", small_model("liif"))
    assert (
        run(ckpt, set14("face", "X4"), "--scale", 2, "-o", tmp_path / "x.png", "--expert-map", tmp_path / "m.png") == 2
    )
    assert "--expert-map needs a MoEISR checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
