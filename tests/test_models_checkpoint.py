"""Checkpoints: the official LIIF/LTE format, ours (atomic, with train state and meta), and errors."""

import os

import pytest
import torch
from test_models_support import lr_crop, small_model

from moeisr import load_model
from moeisr.errors import UserError
from moeisr.models.checkpoint import FORMAT, FORMAT_VERSION, read_checkpoint, save_checkpoint


def official_file(model, path):
    """What the official train.py writes: the config's model spec plus its state dict, optimizer, epoch."""
    spec = {"name": model.spec["name"], "args": model.spec["args"], "sd": model.state_dict()}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    opt_spec = {"name": "adam", "args": {"lr": 1e-4}, "sd": optimizer.state_dict()}
    torch.save({"model": spec, "optimizer": opt_spec, "epoch": 1000}, path)
    return path


@pytest.mark.parametrize(("decoder", "encoder"), [("liif", "edsr-baseline"), ("lte", "rdn")])
def test_official_format_round_trip_gives_identical_outputs(tmp_path, decoder, encoder):
    model = small_model(decoder, encoder)
    lr = lr_crop("man", h=16, w=16)
    loaded = load_model(official_file(model, tmp_path / "epoch-last.pth"))
    assert type(loaded) is type(model) and not loaded.training
    # load_model prepares for inference (channels-last activations): float rounding only...
    assert (loaded.upscale(lr, (37, 37)) - model.upscale(lr, (37, 37))).abs().max().item() <= 1e-5
    loaded.channels_last = False  # ...and without that inference setting, bit for bit
    assert torch.equal(loaded.upscale(lr, (37, 37)), model.upscale(lr, (37, 37)))


def test_official_spec_with_minimal_args_loads_strictly(tmp_path):
    """An official config spec (encoder args just `no_upsampling: true`) builds the full-size model."""
    spec = {
        "name": "liif",
        "args": {
            "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}},
        },
    }
    from moeisr.registry import models

    sd = models.make(spec).state_dict()
    torch.save({"model": {**spec, "sd": sd}, "epoch": 1}, tmp_path / "liif.pth")
    loaded = load_model(tmp_path / "liif.pth")
    assert loaded.imnet_in_dim == 64 * 9 + 4
    conv = 64 * 64 * 9 + 64
    encoder = (3 * 64 * 9 + 64) + 33 * conv  # head, 16 blocks of 2 convs, body tail (MeanShift is a buffer)
    imnet = (580 * 256 + 256) + 3 * (256 * 256 + 256) + (256 * 3 + 3)
    assert sum(p.numel() for p in loaded.parameters()) == encoder + imnet == 1_567_299


def test_our_format_is_atomic_and_keeps_train_state(tmp_path):
    model = small_model("lte")
    path = tmp_path / "sub" / "ckpt.pth"
    train_state = {"epoch": 3, "optimizer": torch.optim.Adam(model.parameters()).state_dict()}
    save_checkpoint(path, model, train_state=train_state, meta={"commit": "abc123"})
    assert sorted(os.listdir(path.parent)) == ["ckpt.pth"]  # no temp file left behind
    raw = read_checkpoint(path)
    assert raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION
    assert raw["model"]["name"] == "lte" and raw["train_state"]["epoch"] == 3 and raw["meta"]["commit"] == "abc123"
    loaded = load_model(path)
    assert loaded.spec == model.spec
    lr = lr_crop()
    # prepared for inference (channels-last encoder activations): equal up to float rounding, and bitwise the
    # plain model's output without that setting; the parameters are the saved ones, layout included
    assert loaded.channels_last and not loaded.training
    assert (loaded.upscale(lr, (50, 41)) - model.upscale(lr, (50, 41))).abs().max().item() <= 1e-5
    loaded.channels_last = False
    assert torch.equal(loaded.upscale(lr, (50, 41)), model.upscale(lr, (50, 41)))
    saved = model.state_dict()
    assert all(v.is_contiguous() and torch.equal(v, saved[k]) for k, v in loaded.state_dict().items())


def test_failed_save_keeps_the_previous_file(tmp_path):
    model = small_model("liif")
    path = save_checkpoint(tmp_path / "a.pth", model)
    before = path.read_bytes()
    with pytest.raises(Exception):  # noqa: B017  (an unpicklable meta value fails inside torch.save)
        save_checkpoint(path, model, meta={"bad": lambda: 0})
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["a.pth"]


def test_errors_name_the_file(tmp_path):
    model = small_model("liif")
    good = save_checkpoint(tmp_path / "good.pth", model)

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(UserError, match="truncated.pth"):
        load_model(truncated)

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(UserError, match="notes.pth"):
        load_model(text)

    tensor_only = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(UserError, match="tensor.pth.*not a checkpoint"):
        load_model(tensor_only)

    sd = model.state_dict()
    del sd["imnet.layers.0.weight"]
    missing = tmp_path / "missing.pth"
    torch.save({"model": {"name": "liif", "args": model.spec["args"], "sd": sd}}, missing)
    with pytest.raises(UserError, match="missing.pth.*imnet.layers.0.weight"):
        load_model(missing)

    unknown = tmp_path / "unknown.pth"
    torch.save({"model": {"name": "liff", "args": {}, "sd": {}}}, unknown)
    with pytest.raises(UserError, match="unknown.pth.*liff.*did you mean 'liif'"):
        load_model(unknown)

    no_spec = tmp_path / "no_spec.pth"
    torch.save({"state_dict": model.state_dict()}, no_spec)
    with pytest.raises(UserError, match="no_spec.pth.*no model spec"):
        load_model(no_spec)

    with pytest.raises(UserError, match="absent.pth"):
        load_model(tmp_path / "absent.pth")


def test_loading_never_unpickles_code(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"model": {"name": "liif", "args": {}, "sd": {}}, "hook": print}, evil)
    with pytest.raises(UserError, match="evil.pth"):
        load_model(evil)
