"""`moeisr flops`: model specs, experiment specs and checkpoints, the table and JSON outputs, errors."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from moeisr.cli import main
from moeisr.commands.arguments import parse_size
from moeisr.data.images import load_image
from moeisr.data.roots import data_root
from moeisr.flops import count
from moeisr.flops.source import build_from_spec, model_spec_from_yaml, parse_knob
from moeisr.models.checkpoint import load_model, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
ENC = "{name: edsr-baseline, args: {n_resblocks: 1, n_feats: 8}}"
MLP = "{name: mlp, args: {out_dim: 3, hidden_list: [16, 16]}}"
LIIF_SPEC = f"name: liif\nargs: {{encoder_spec: {ENC}, imnet_spec: {MLP}}}\n"
MOE_SPEC = (
    f"name: moeisr\nargs:\n  backbone_spec: {{name: liif, args: {{encoder_spec: {ENC}, imnet_spec: {MLP}}}}}\n"
    "  mapper: {width: 8}\n"
)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(*argv):
    return main(["flops", *map(str, argv)])


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def lr_png(tmp_path) -> Path:
    """A real 12×10 LR patch of Set14 'comic' (the MATLAB ×4 reference LR), saved as PNG."""
    src = data_root() / "benchmark" / "Set14" / "LR_bicubic" / "X4" / "comicx4.webp"
    out = tmp_path / "lr.png"
    with Image.open(src) as im:
        im.convert("RGB").crop((20, 30, 30, 42)).save(out)
    return out


def test_model_spec_table_and_json(tmp_path, capsys):
    spec = write(tmp_path / "liif.yaml", LIIF_SPEC)
    assert run(spec, "--lr-size", "12x10", "--scale", 2.5) == 0
    table = capsys.readouterr().out
    assert "untrained" in table and "LR 12x10 -> 30x25" in table and "uncounted ops (" in table
    for row in ("encoder", "decoder (MLP)", "other", "total"):
        assert any(line.startswith(row) for line in table.splitlines())
    assert run(spec, "--lr-size", "12x10", "--scale", 2.5, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    expected = count(build_from_spec(model_spec_from_yaml(spec), "test"), (10, 12), 2.5)  # --lr-size is WxH
    assert data["total"] == expected.total and data["trained"] is False and data["uncounted_ops"] == {}


def test_experiment_spec_with_profile(tmp_path, capsys):
    shutil.copy(REPO / "experiments" / "profiles.yaml", tmp_path / "profiles.yaml")
    body = "\n".join("  " + line for line in LIIF_SPEC.splitlines())
    exp = write(tmp_path / "tiny_liif.yaml", f"model:\n{body}\n")
    assert run(exp, "--lr-size", "9x8", "--scale", 2, "--profile", "cpu", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "liif" and data["out_size"] == [16, 18]
    assert run(exp, "--lr-size", "8x9", "--scale", 2, "--profile", "nope") == 2
    assert "unknown profile" in capsys.readouterr().err


@pytest.mark.data
def test_checkpoint_with_image_matches_the_library(tmp_path, lr_png, capsys):
    ckpt = tmp_path / "moe.pth"
    save_checkpoint(ckpt, build_from_spec(model_spec_from_yaml(write(tmp_path / "moe.yaml", MOE_SPEC)), "test", seed=3))
    assert run(ckpt, "--image", lr_png, "--scale", 3, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    expected = count(load_model(ckpt), None, 3, image=load_image(lr_png))
    assert data["trained"] is True and data["lr_size"] == [12, 10] and data["out_size"] == [36, 30]
    assert data["per_expert"] == expected.per_expert and data["total"] == expected.total
    assert run(ckpt, "--image", lr_png, "--lr-size", "10x12", "--scale", 3, "--routing-knob=-inf") == 0
    table = capsys.readouterr().out
    assert "-inf (all deepest)" in table and "expert 1 [16]*2" in table and "pixels 100.0%" in table


def test_path_option_counts_the_executed_decoder(tmp_path, capsys):
    """--path as_executed counts LIIF's split first layer: fewer decoder FLOPs, and the library's own count."""
    spec = write(tmp_path / "liif.yaml", LIIF_SPEC)
    totals = {}
    for path in ("as_published", "as_executed"):
        assert run(spec, "--lr-size", "12x10", "--scale", 3, "--path", path, "--json") == 0
        data = json.loads(capsys.readouterr().out)
        assert data["path"].startswith(path.replace("_", " "))
        totals[path] = data["total"]
    assert totals["as_executed"] < totals["as_published"]


def test_moeisr_without_image_needs_an_infinite_knob(tmp_path, capsys):
    spec = write(tmp_path / "moe.yaml", MOE_SPEC)
    assert run(spec, "--lr-size", "6x6", "--scale", 2) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moeisr flops: error: MoEISR's FLOPs depend on the image") and "\n" not in err
    assert run(spec, "--lr-size", "6x6", "--scale", 2, "--routing-knob", "cheapest", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["routing_knob"] == "inf" and data["expert_shares"] == [1.0, 0.0]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr-size", "12x", "--scale", "2"], "--lr-size '12x' is not WxH"),
        (["--lr-size", "0x5", "--scale", "2"], "is not WxH"),
        (["--lr-size", "8x8", "--scale", "0.5"], "scale 0.5 is not supported"),
        (["--lr-size", "8x8", "--scale", "nan"], "scale nan is not supported"),
        (["--lr-size", "8x8", "--scale", "two"], "scale 'two' is not a number"),
        (["--scale", "2"], "pass --lr-size"),
        (["--lr-size", "8x8", "--scale", "2", "--image", "/nonexistent/lr.png"], "does not exist"),
        (["--lr-size", "8x8", "--scale", "2", "--routing-knob", "x"], "--routing-knob 'x'"),
        (["--lr-size", "8x8", "--scale", "2", "--chunk-size", "0"], "--chunk-size"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, argv, message):
    spec = write(tmp_path / "liif.yaml", LIIF_SPEC)
    assert run(spec, *argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("missing.pth", None, "does not exist"),
        ("missing.yaml", None, "does not exist"),
        ("bad.yaml", "name: [liif\n", "not valid YAML"),
        ("odd.yaml", "foo: 1\n", "neither a model spec"),
        ("unknown.yaml", "name: no-such-model\n", "no-such-model"),
        ("junk.pth", "not a checkpoint", "cannot be read"),
    ],
)
def test_bad_sources_are_one_line_errors(tmp_path, capsys, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    assert run(path, "--lr-size", "8x8", "--scale", "2") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_parsers():
    assert parse_size("--lr-size", "125x180") == (180, 125) and parse_size("--lr-size", " 3 × 4 ") == (4, 3)
    assert parse_knob("deepest") == float("-inf") and parse_knob("-inf") == float("-inf") and parse_knob("0.5") == 0.5
