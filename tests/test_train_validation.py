"""Validation during training: the PSNR of a real Set5 image is logged in log.csv; `Validator.measure` (the recipe
suite's held-out measurement) gives the same PSNRs with each crop's routing and FLOPs.

One full 512×512 decode with the paper's 256-wide decoder: the slowest training test (~15-30 s).
"""

import math

import pytest
import torch
from test_train_support import log_rows, one_thread, run_cli, train_args  # noqa: F401 (fixture)

import moeisr.models  # noqa: F401  (registration)
from moeisr.flops.per_image import ArchitectureFlops
from moeisr.registry import models
from moeisr.train.validation import Validator

pytestmark = pytest.mark.data  # the shared images (tests/shared_data.py)


def test_validation_psnr_is_logged(tmp_path, one_thread):  # noqa: F811
    sets = ["data.val_set=Set5", "data.val_limit=1", "data.val_scale=4", "train.val_every=20", "optim.max_steps=20"]
    assert run_cli(train_args("lte", tmp_path / "lte", *sets)) == (0, "")
    rows = log_rows(tmp_path / "lte")
    assert [r["val_psnr"] for r in rows[:-1]] == ["", "", ""]
    # x4 on Set5 'baby': LTE's bilinear skip alone gives ~29 dB, a barely trained model lands near it
    assert 20 < float(rows[-1]["val_psnr"]) < 40


@pytest.mark.slow  # ~10 s: two fvcore size-model fits
def test_measure_gives_the_validation_psnrs_with_each_crops_routing_and_flops():
    """`Validator.measure` on two fixed T91 crops at ×2 and ×4: its PSNRs average to `per_scale`'s, a MoEISR record
    carries its expert shares and decoder cost Σ share_j · c_j / c_max, the FLOPs are the per-image counter's; a
    dense model's records have neither shares nor cost."""
    encoder = {"name": "edsr-baseline", "args": {"n_resblocks": 2, "n_feats": 8, "no_upsampling": True}}
    mlp = {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16, 16]}}
    backbone = {"name": "liif", "args": {"encoder_spec": encoder, "imnet_spec": mlp}}
    mapper = {"n_layers": 1, "width": 8}
    moe = models.make({"name": "moeisr", "args": {"backbone_spec": backbone, "mapper": mapper}}).eval()
    dense = models.make(backbone).eval()
    validator = Validator("T91", [2, 4], limit=2, crop=24)
    flops = ArchitectureFlops()
    records = validator.measure(moe, "cpu", flops)
    assert [(r["dataset"], r["scale"], r["crop"], r["h"]) for r in records] == [("T91", s, 24, 24) for s in
                                                                                (2.0, 2.0, 4.0, 4.0)]  # fmt: skip
    means = validator.per_scale(moe, torch.device("cpu"))
    for scale, mean in means.items():
        assert sum(r["psnr"] for r in records if r["scale"] == scale) / 2 == pytest.approx(mean, abs=1e-9)
    costs = moe.experts.relative_costs().tolist()
    for r, pair in zip(records, [p for s in (2.0, 4.0) for p in validator.pairs()[s]], strict=True):
        shares = [r[f"share_{j}"] for j in range(len(costs))]
        assert sum(shares) == pytest.approx(1.0) and r["rel_cost"] == pytest.approx(
            sum(map(math.prod, zip(shares, costs, strict=True)))
        )
        total, expected = flops(moe, pair.lr[None], pair.scale, None)
        assert r["gflops"] == pytest.approx(total / 1e9) and shares == pytest.approx(expected)
    without = validator.measure(moe, "cpu")  # shares from the expert map alone, no FLOPs
    assert [r["rel_cost"] for r in without] == pytest.approx([r["rel_cost"] for r in records])
    assert all("gflops" not in r for r in without)
    plain = validator.measure(dense, "cpu", flops)
    assert all("rel_cost" not in r and "share_0" not in r and r["gflops"] > 0 for r in plain)
