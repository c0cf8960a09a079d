"""Bad experiment configs through `moeisr train` and `moeisr flops`: unknown keys (with the nearest valid
spelling), wrong types, missing files and unknown profiles are one-line errors naming the file and key.

The same checks on `load_experiment` itself are in tests/test_config.py.
"""

from __future__ import annotations

import shutil

import pytest
from test_reliability_support import EXPERIMENTS, assert_refused, cli, train_args


@pytest.fixture
def spec_dir(tmp_path):
    """A copy of the shipped liif.yaml beside the shared profiles.yaml, to edit."""
    folder = tmp_path / "experiments"
    folder.mkdir()
    for name in ("liif.yaml", "profiles.yaml"):
        shutil.copyfile(EXPERIMENTS / name, folder / name)
    return folder


def with_section(spec_dir, text: str):
    path = spec_dir / "liif.yaml"
    path.write_text(path.read_text() + text)
    return path


# (text appended to liif.yaml, what the error says)
FILE_CASES = {
    "unknown key": ("optim: {max_step: 5}\n", "unknown key 'optim.max_step' (did you mean 'optim.max_steps'?)"),
    "key in the wrong section": ("optim: {batch_size: 4}\n", "unknown key 'optim.batch_size' (did you mean "),
    "wrong type": ("optim: {lr: fast}\n", "'optim.lr' must be a number, got 'fast' (str)"),
    "wrong type in a list": ("data: {train_sets: BSD200}\n", "'data.train_sets' must be a list"),
}


@pytest.mark.parametrize("case", FILE_CASES)
@pytest.mark.parametrize("command", ["train", "flops"])
def test_a_bad_key_in_the_spec_file_is_one_line_naming_file_and_key(spec_dir, tmp_path, capsys, case, command):
    text, message = FILE_CASES[case]
    spec = with_section(spec_dir, text)
    run = tmp_path / "run"
    if command == "train":
        code, err = cli(capsys, "train", spec, "--profile", "smoke", "--out", run)
    else:
        code, err = cli(capsys, "flops", spec, "--profile", "smoke", "--lr-size", "8x8", "--scale", 2)
    assert_refused(code, err, f"moeisr {command}: error: {spec}", message)
    assert not run.exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr_rate=1e-4", "override 'optim.lr_rate=1e-4': unknown key 'optim.lr_rate' (did you mean 'optim.lr'?)"),
        ("data.bach_size=4", "unknown key 'data.bach_size' (did you mean 'data.batch_size'?)"),
        ("optim.max_steps=abc", "'optim.max_steps' must be an integer, got 'abc' (str)"),
        ("optim.lr", "override 'optim.lr' must look like key=value, e.g. optim.lr=1e-4"),
    ],
)
def test_a_bad_override_is_one_line_naming_the_key(tmp_path, capsys, override, message):
    run = tmp_path / "run"
    code, err = cli(capsys, *train_args(run, override))
    assert_refused(code, err, message)
    assert not run.exists()


def test_a_missing_spec_file_suggests_the_nearest_one(spec_dir, tmp_path, capsys):
    missing = spec_dir / "lif.yaml"
    code, err = cli(capsys, "train", missing, "--profile", "smoke", "--out", tmp_path / "run")
    assert_refused(code, err, f"{missing}: experiment file not found (did you mean {spec_dir / 'liif.yaml'}?)")
    code, err = cli(capsys, "flops", missing, "--lr-size", "8x8", "--scale", 2)
    assert_refused(code, err, f"{missing} does not exist; pass a checkpoint (.pth), a model spec or an experiment")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "flops"])
def test_an_unknown_profile_lists_the_available_ones(spec_dir, tmp_path, capsys, command):
    spec = spec_dir / "liif.yaml"
    if command == "train":
        code, err = cli(capsys, "train", spec, "--profile", "smok", "--out", tmp_path / "run")
    else:
        code, err = cli(capsys, "flops", spec, "--profile", "smok", "--lr-size", "8x8", "--scale", 2)
    assert_refused(code, err, f"{spec}: unknown profile 'smok' (did you mean 'smoke'?", "available: cpu, paper, smoke")
    assert not (tmp_path / "run").exists()
