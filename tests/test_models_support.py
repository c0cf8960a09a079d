"""Helpers shared by the tests/test_models_*.py files (no tests here): real images, small model specs,
and the official reference path from bench/reference_paths.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from shared_data import require_data_root as data_root

from moeisr.registry import models

REPO = Path(__file__).resolve().parents[1]


def set14(name: str, kind: str = "HR") -> Path:
    """Path of a Set14 image: kind 'HR' or 'X2'/'X3'/'X4' for the MATLAB bicubic LR references."""
    base = data_root() / "benchmark" / "Set14"
    if kind == "HR":
        return base / "HR" / f"{name}.webp"
    return base / "LR_bicubic" / kind / f"{name}{kind.lower()}.webp"


def read_image(path: Path) -> torch.Tensor:
    """1×3×H×W float in [0, 1]."""
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def lr_crop(
    name: str = "comic", kind: str = "X4", top: int = 8, left: int = 8, h: int = 24, w: int = 20
) -> torch.Tensor:
    """A real LR patch (1×3×h×w) from a Set14 LR reference image."""
    return read_image(set14(name, kind))[..., top : top + h, left : left + w].contiguous()


def reference():
    """bench/reference_paths.py, the official inference path (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("reference_paths", REPO / "bench" / "reference_paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SMALL_ENCODERS = {
    "edsr-baseline": {"name": "edsr-baseline", "args": {"n_resblocks": 2, "n_feats": 16, "no_upsampling": True}},
    "rdn": {"name": "rdn", "args": {"G0": 16, "D": 2, "C": 2, "G": 8, "no_upsampling": True}},
}


def small_model(decoder: str, encoder: str = "edsr-baseline", hidden=(32, 32), **args):
    """A small LIIF/LTE with the official spec layout (seeded by the caller)."""
    spec = {
        "name": decoder,
        "args": {
            "encoder_spec": SMALL_ENCODERS[encoder],
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": list(hidden)}},
            **({"hidden_dim": 32} if decoder == "lte" else {}),
            **args,
        },
    }
    return models.make(spec)
