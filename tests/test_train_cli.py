"""`moeisr train` on the four shipped specs (smoke profile): logs, checkpoints, init_from."""

import math

import pytest
import torch
from test_train_support import log_rows, one_thread, run_cli, train_args, weights  # noqa: F401 (fixture)

from moeisr import load_model
from moeisr.data.benchmark import list_images
from moeisr.data.images import load_image
from moeisr.models.moe.experts import linear_layers

pytestmark = pytest.mark.data  # the shared images (tests/shared_data.py)


def _lr_crop() -> torch.Tensor:
    """A real 1×3×24×20 LR crop (Set5 butterfly)."""
    image = load_image(list_images("Set5")[2])
    return image[None, :, 100:124, 80:100]


def _check_run(run_dir, routed: bool) -> None:
    rows = log_rows(run_dir)
    assert [int(r["step"]) for r in rows] == [5, 10, 15, 20]  # smoke: 20 steps, a row every 5
    assert all(math.isfinite(float(r["loss"])) and float(r["lr"]) == 1e-4 for r in rows)
    assert all(float(r["seconds"]) > 0 for r in rows)
    if routed:  # loss = l1 + 0.01 * balance, the switch balance term is ~1 near uniform routing
        assert all(0.5 < float(r["balance"]) < 4 for r in rows)
        assert all(float(r["loss"]) > float(r["l1"]) for r in rows)
    else:
        assert all(r["balance"] == "" and r["loss"] == r["l1"] for r in rows)
    model = load_model(run_dir / "final.pt")
    sr = model.upscale(_lr_crop(), (60, 50))
    assert sr.shape == (1, 3, 60, 50) and 0 <= sr.min() and sr.max() <= 1 and sr.std() > 0.01
    assert {p.name for p in run_dir.iterdir()} >= {"final.pt", "last.pt", "log.csv", "spec.yaml"}


def _max_diff(a: dict, b: dict, prefix_a: str, prefix_b: str) -> float:
    keys = [k for k in a if k.startswith(prefix_a)]
    assert keys
    return max((a[k] - b[prefix_b + k[len(prefix_a) :]]).abs().max().item() for k in keys)


def test_backbones_then_moeisr_initialised_from_them(tmp_path, one_thread):  # noqa: F811
    runs = tmp_path / "runs"
    for backbone, moe in (("liif", "moeisr_liif"), ("lte", "moeisr_lte")):
        assert run_cli(train_args(backbone, runs / backbone)) == (0, "")
        _check_run(runs / backbone, routed=False)
        assert run_cli(train_args(moe, runs / moe)) == (0, "")  # finds runs/<backbone>/final.pt by itself
        _check_run(runs / moe, routed=True)
        parent, child = weights(runs / backbone / "final.pt"), weights(runs / moe / "final.pt")
        # 20 Adam steps at lr 1e-4 move a weight by at most ~2e-3: the encoder and the deepest expert
        # still sit next to the backbone's, far from a fresh random init
        assert _max_diff(parent, child, "encoder.", "backbone.encoder.") < 3e-3
        model = load_model(runs / moe / "final.pt")
        deepest = [n for n, _ in model.experts[model.n_experts - 1].named_parameters()]
        layers = linear_layers(model.experts[model.n_experts - 1])
        imnet = [k for k in parent if k.startswith("imnet.") and k.endswith(".weight")]
        assert len(layers) == len(imnet) and deepest
        for layer, key in zip(layers, sorted(imnet, key=lambda k: int(k.split(".")[2])), strict=True):
            assert (layer.weight - parent[key]).abs().max() < 3e-3
        assert f"parent_checkpoint: {runs / backbone / 'final.pt'}" in (runs / moe / "spec.yaml").read_text()
