"""Helpers for the tests/test_reliability_*.py battery (no tests here): real files made bad, CLI runs.

Every bad input is built from the real shared data (a crop of a benchmark image, the data README), so
the battery exercises the decoders on real bytes rather than on synthetic stand-ins.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image
from shared_data import require_data_root as data_root

from moeisr.cli import main

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"

# Tiny model specs for `moeisr flops` (the smoke-profile sizes of tests/test_flops_cli.py).
ENC = "{name: edsr-baseline, args: {n_resblocks: 1, n_feats: 8}}"
MLP = "{name: mlp, args: {out_dim: 3, hidden_list: [16, 16]}}"
LIIF_SPEC = f"name: liif\nargs: {{encoder_spec: {ENC}, imnet_spec: {MLP}}}\n"

BAD_IMAGES = ("truncated", "corrupt", "not_an_image", "empty", "one_pixel", "float_rgb")
FOUND_WHEN_DECODED = ("truncated", "corrupt")  # their header is intact: only decoding the pixels fails
TEMP_SUFFIXES = (".tmp", ".probe")


def real_rgb(height: int = 80, width: int = 72) -> np.ndarray:
    """A height×width×3 uint8 crop of Set14 'comic' (HR), real pixels for every file built here."""
    with Image.open(data_root() / "benchmark" / "Set14" / "HR" / "comic.webp") as img:
        return np.asarray(img.convert("RGB"))[20 : 20 + height, 10 : 10 + width].copy()


def save_png(array: np.ndarray, path: Path, mode: str | None = None) -> Path:
    Image.fromarray(array, mode).save(path)
    return path


def make_bad_image(kind: str, folder: Path) -> Path:
    """A broken or unusable image file of `kind` (see BAD_IMAGES) in `folder`, named zz_<kind>.*.

    The zz_ prefix sorts it after real images, so a run has done some work before it meets the file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":  # a valid header (80x72) but half the pixel data
        good = save_png(real_rgb(), folder / "whole.png")
        data = good.read_bytes()
        good.unlink()
        path = folder / "zz_truncated.png"
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":  # complete, but 64 bytes of the compressed pixel data (IDAT) flipped
        data = bytearray(save_png(real_rgb(), folder / "whole.png").read_bytes())
        (folder / "whole.png").unlink()
        start = data.find(b"IDAT") + 40
        data[start : start + 64] = bytes(b ^ 0xFF for b in data[start : start + 64])
        path = folder / "zz_corrupt.png"
        path.write_bytes(bytes(data))
    elif kind == "not_an_image":  # a real text file renamed .png
        path = folder / "zz_not_an_image.png"
        shutil.copyfile(data_root() / "README.md", path)
    elif kind == "empty":
        path = folder / "zz_empty.png"
        path.touch()
    elif kind == "one_pixel":
        path = save_png(real_rgb(1, 1), folder / "zz_one_pixel.png")
    elif kind == "float_rgb":  # 32-bit float RGB: a pixel format Pillow cannot decode
        import tifffile

        path = folder / "zz_float_rgb.tif"
        tifffile.imwrite(path, real_rgb().astype(np.float32) / 255, photometric="rgb")
    else:
        raise ValueError(kind)
    return path


# What each bad image's one-line error says, besides the file name.
BAD_IMAGE_MESSAGES = {
    "truncated": "image file is truncated",
    "corrupt": "cannot decode image (",
    "not_an_image": "not an image Pillow can read",
    "empty": "file is empty (0 bytes)",
    "one_pixel": "1x1 pixels",
    "float_rgb": "unsupported pixel format",
}


def cli(capsys, *argv) -> tuple[int, str]:
    """Run `moeisr *argv` in this process: (exit code, captured stderr)."""
    code, _, err = cli_output(capsys, *argv)
    return code, err


def cli_output(capsys, *argv) -> tuple[int, str, str]:
    """Run `moeisr *argv` in this process: (exit code, captured stdout, captured stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(code: int, err: str, *needles: str) -> str:
    """Exit status 2 and exactly one error line (the last line; warnings may come first) holding `needles`."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert lines[-1].startswith(("moeisr: error: ", "moeisr ")), err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def temp_leftovers(folder: Path) -> list[str]:
    """Hidden temporary files (atomic-write temps, writability probes) anywhere under `folder`."""
    return sorted(str(p) for p in folder.rglob(".*") if p.name.endswith(TEMP_SUFFIXES))


def visible_files(folder: Path) -> list[str]:
    """Non-hidden entries of `folder` (empty if it does not exist)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


def eval_root(folder: Path, *extra: Path) -> Path:
    """A data root whose Set5 holds one real image (bird, 288x288) plus `extra` files."""
    hr = folder / "benchmark" / "Set5" / "HR"
    hr.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_root() / "benchmark" / "Set5" / "HR" / "bird.webp", hr / "bird.webp")
    for path in extra:
        shutil.copyfile(path, hr / path.name)
    return folder


def train_folder(folder: Path) -> Path:
    """Two real 80x72 training images (grey and palette PNGs: both are converted, not refused)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = real_rgb()
    Image.fromarray(rgb).convert("L").save(folder / "a_grey.png")
    Image.fromarray(rgb[::-1].copy()).quantize(colors=64).save(folder / "b_palette.png")
    return folder


def train_args(out: Path, *sets: str, spec: str = "liif", extra: tuple[str, ...] = ()) -> list[str]:
    """argv of a smoke-profile `moeisr train` run of experiments/<spec>.yaml."""
    args = ["train", EXPERIMENTS / f"{spec}.yaml", "--profile", "smoke", "--out", out, "--no-progress", *extra]
    return [*args, "--set", *sets] if sets else args


# ------------------------------------------------------------------------------- other users


# Runs `moeisr` commands in a process that cannot write 0555 folders. Root ignores permission bits through
# CAP_DAC_OVERRIDE (and CAP_DAC_READ_SEARCH), so as root the child drops those two capabilities first
# (Linux capset); it stays the owner of the test files, so it can still read them and the interpreter.
AS_RESTRICTED_USER = textwrap.dedent(
    """
    import contextlib, ctypes, io, json, os, sys
    if os.geteuid() == 0:
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class Data(ctypes.Structure):
            _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]
        libc = ctypes.CDLL(None, use_errno=True)
        header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
        assert libc.capget(ctypes.byref(header), data) == 0, ctypes.get_errno()
        keep = ~((1 << 1) | (1 << 2)) & 0xFFFFFFFF  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        data[0].effective &= keep
        data[0].permitted &= keep
        data[0].inheritable &= keep
        assert libc.capset(ctypes.byref(header), data) == 0, ctypes.get_errno()
    from moeisr.cli import main
    results = []
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(argv)
        results.append({"code": code, "err": err.getvalue()})
    print(json.dumps(results))
    """
)


def run_as_restricted_user(*argvs: list) -> list[dict]:
    """Run each argv through `moeisr` in one child process that cannot write 0555 folders, even as root."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    payload = json.dumps([[str(a) for a in argv] for argv in argvs])
    out = subprocess.run([sys.executable, "-c", AS_RESTRICTED_USER, payload], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextmanager
def read_only(folder: Path) -> Iterator[Path]:
    """`folder` made read-only (0555) for the block, writable again afterwards (so it can be cleaned up)."""
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)
