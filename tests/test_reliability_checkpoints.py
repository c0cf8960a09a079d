"""Bad checkpoints through every CLI that loads one (sr, eval, flops, train --init, train --resume).

Truncated files, missing keys, checkpoints of another model kind and pickles whose `__reduce__` runs code
are one-line errors naming the file. The malicious pickle is refused by weights-only loading: the tests
prove its payload is live (a plain `torch.load` runs it) and that no command ran it.
"""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
from test_models_support import small_model
from test_reliability_support import (
    assert_refused,
    cli,
    eval_root,
    real_rgb,
    save_png,
    temp_leftovers,
    train_args,
    visible_files,
)

from moeisr.models.checkpoint import save_checkpoint

COMMANDS = ("sr", "eval", "flops", "train --init", "train --resume")


class WritesMarker:
    """Unpickling this calls exec(), which writes `marker`: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('code ran')",))


def make_checkpoint(kind: str, path, marker=None):
    """A bad checkpoint file of `kind` at `path`, built from a real (small) LIIF checkpoint."""
    torch.manual_seed(0)
    model = small_model("liif")
    if kind == "truncated":
        good = save_checkpoint(path.with_name("good.pt"), model).read_bytes()
        path.write_bytes(good[: len(good) * 3 // 5])
    elif kind == "missing weight":
        sd = model.state_dict()
        del sd["imnet.layers.0.weight"]
        torch.save({"model": {"name": "liif", "args": model.spec["args"], "sd": sd}}, path)
    elif kind == "missing model entry":  # a bare state dict, as many other projects save
        torch.save(model.state_dict(), path)
    elif kind == "malicious (torch zip)":
        torch.save({"model": {"name": "liif", "args": {}, "sd": {}}, "x": WritesMarker(marker)}, path)
    elif kind == "malicious (torch legacy)":
        payload = {"model": {"name": "liif", "args": {}, "sd": {}}, "x": WritesMarker(marker)}
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    elif kind == "malicious (plain pickle)":
        path.write_bytes(pickle.dumps({"model": WritesMarker(marker)}, protocol=2))
    else:
        raise ValueError(kind)
    return path


def run_with_checkpoint(capsys, command: str, ckpt, tmp_path) -> tuple[int, str, list]:
    """Run `command` on `ckpt` in `tmp_path`; (exit code, stderr, the output paths that must not appear)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    out = tmp_path / "out"
    if command == "sr":
        src = save_png(real_rgb(24, 20), tmp_path / "lr.png")
        return (*cli(capsys, "sr", ckpt, src, "--scale", 2, "-o", out / "sr.png"), [out / "sr.png"])
    if command == "eval":
        root = eval_root(tmp_path / "data")
        args = ["eval", f"m={ckpt}", "--sets", "Set5", "--scales", 2, "--data-root", root, "--out", out / "r.csv"]
        code, err = cli(capsys, *args, "--no-lpips", "--no-flops", "--quiet")
        return code, err, [out / "r.csv", out / "r.jsonl"]
    if command == "flops":
        return (*cli(capsys, "flops", ckpt, "--lr-size", "8x8", "--scale", 2), [])
    if command == "train --init":
        run = out / "moeisr_liif"
        return (*cli(capsys, *train_args(run, spec="moeisr_liif", extra=("--init", str(ckpt)))), [run / "last.pt"])
    if command == "train --resume":
        run = out / "liif"
        run.mkdir(parents=True)
        shutil.copyfile(ckpt, run / "last.pt")
        return (*cli(capsys, *train_args(run, extra=("--resume",))), [run / "log.csv", run / "final.pt"])
    raise ValueError(command)


def assert_nothing_written(tmp_path, absent) -> None:
    for path in absent:
        assert not path.exists(), path
    assert temp_leftovers(tmp_path) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_a_truncated_checkpoint_is_refused(tmp_path, capsys, command):
    ckpt = make_checkpoint("truncated", tmp_path / "truncated.pt")
    code, err, absent = run_with_checkpoint(capsys, command, ckpt, tmp_path)
    name = "last.pt" if command == "train --resume" else "truncated.pt"
    assert_refused(code, err, f"{name} cannot be read", "is it a complete torch .pth file?")
    assert_nothing_written(tmp_path, absent)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_checkpoint_with_a_missing_key_is_refused(tmp_path, capsys, command):
    if command == "train --resume":  # a model checkpoint without the training state
        ckpt = save_checkpoint(tmp_path / "weights_only.pt", small_model("liif"))
        code, err, absent = run_with_checkpoint(capsys, command, ckpt, tmp_path)
        assert_refused(code, err, "last.pt holds no training state", "not a checkpoint written by `moeisr train`")
    else:
        ckpt = make_checkpoint("missing weight", tmp_path / "missing.pt")
        code, err, absent = run_with_checkpoint(capsys, command, ckpt, tmp_path)
        assert_refused(code, err, "missing.pt: weights do not match model 'liif'", "imnet.layers.0.weight")
    assert_nothing_written(tmp_path, absent)


@pytest.mark.parametrize("command", ["sr", "eval", "flops"])
def test_a_bare_state_dict_is_refused_as_having_no_model_spec(tmp_path, capsys, command):
    ckpt = make_checkpoint("missing model entry", tmp_path / "state_dict.pth")
    code, err, absent = run_with_checkpoint(capsys, command, ckpt, tmp_path)
    assert_refused(code, err, "state_dict.pth has no model spec", "'model' entry with 'name', 'args', 'sd'")
    assert_nothing_written(tmp_path, absent)


def test_a_checkpoint_of_another_model_kind_is_refused(tmp_path, capsys):
    torch.manual_seed(0)
    lte = save_checkpoint(tmp_path / "lte.pt", small_model("lte"))
    # MoEISR-LIIF initialised from an LTE: the backbone spec differs
    code, err, absent = run_with_checkpoint(capsys, "train --init", lte, tmp_path)
    assert_refused(code, err, f"{lte}: its model does not match this experiment's backbone")
    assert_nothing_written(tmp_path, absent)
    assert visible_files(tmp_path / "out" / "moeisr_liif") == []
    # MoEISR-only options with a LIIF/LTE checkpoint
    src = save_png(real_rgb(24, 20), tmp_path / "lr.png")
    out = tmp_path / "sr.png"
    for option, value in (("--routing-knob", "0.5"), ("--expert-map", str(tmp_path / "map.png"))):
        code, err = cli(capsys, "sr", lte, src, "--scale", 2, "-o", out, option, value)
        assert_refused(code, err, f"{option} needs a MoEISR checkpoint; {lte} is not one")
    assert not out.exists() and not (tmp_path / "map.png").exists()
    # resuming a run from another experiment's checkpoint: its config hash differs
    state = {"step": 3, "config_hash": "0123456789ab", "spec": {"name": "lte"}}
    other = save_checkpoint(tmp_path / "other_last.pt", small_model("lte"), train_state=state)
    code, err, absent = run_with_checkpoint(capsys, "train --resume", other, tmp_path)
    assert_refused(code, err, "was trained with config hash 0123456789ab", "start a new run with another --out")
    assert_nothing_written(tmp_path, absent)


MALICIOUS = ("malicious (torch zip)", "malicious (torch legacy)", "malicious (plain pickle)")


@pytest.mark.parametrize("kind", MALICIOUS)
def test_a_pickle_with_a_malicious_reduce_is_refused_and_runs_no_code(tmp_path, capsys, kind):
    marker = tmp_path / "code_ran.txt"
    ckpt = make_checkpoint(kind, tmp_path / "evil.pth", marker)
    for command in COMMANDS:
        code, err, absent = run_with_checkpoint(capsys, command, ckpt, tmp_path / command.replace(" ", "_"))
        name = "last.pt" if command == "train --resume" else "evil.pth"
        assert_refused(code, err, f"{name} refused: it holds a reference to exec", "could run arbitrary code")
        assert "weights_only=False" not in err  # torch's advice to load it anyway is not passed on
        assert_nothing_written(tmp_path, absent)
        assert not marker.exists(), f"moeisr {command} ran the pickle's code"
    # the payload is live: an unrestricted unpickler runs it
    if kind == "malicious (plain pickle)":
        pickle.loads(ckpt.read_bytes())
    else:
        torch.load(ckpt, weights_only=False)
    assert marker.read_text() == "code ran"
