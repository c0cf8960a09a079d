"""The paper profile builds the full-width paper models and trains a step (on BSD200: DIV2K is absent)."""

import math

import pytest
import torch
from test_train_support import log_rows, one_thread, run_cli, train_args  # noqa: F401 (fixture)

from moeisr import load_model

pytestmark = pytest.mark.data  # the shared images (tests/shared_data.py)

# The paper's data and schedule, except: the shared BSD200 images instead of DIV2K, no DIV2K validation,
# no loader workers, a batch of 2 instead of 16 (the model is what this test is about) and one step.
SETS = (
    "data.train_sets=[BSD200]",
    "data.val_set=null",
    "data.num_workers=0",
    "data.batch_size=2",
    "optim.max_steps=1",
)


def test_paper_liif_and_moeisr_build_at_full_size_and_train_a_step(tmp_path, one_thread):  # noqa: F811
    runs = tmp_path / "runs"
    assert run_cli(train_args("liif", runs / "liif", *SETS, profile="paper")) == (0, "")
    ckpt = torch.load(runs / "liif" / "final.pt", weights_only=True)
    spec = ckpt["model"]
    assert spec["args"]["encoder_spec"]["args"]["n_resblocks"] == 16
    assert spec["args"]["encoder_spec"]["args"]["n_feats"] == 64
    assert spec["args"]["imnet_spec"]["args"]["hidden_list"] == [256, 256, 256, 256]
    model = load_model(runs / "liif" / "final.pt")
    # EDSR-baseline (1.22 M) + LIIF's MLP on 64*9+4 = 580 inputs (0.35 M)
    assert sum(p.numel() for p in model.parameters()) == 1_567_299
    data = ckpt["train_state"]["spec"]["data"]
    assert (data["inp_size"], data["sample_q"], data["scale_max"]) == (48, 2304, 4.0)
    assert ckpt["train_state"]["spec"]["optim"]["lr"] == 1e-4 and ckpt["train_state"]["step"] == 1
    row = log_rows(runs / "liif")[-1]
    assert row["step"] == "1" and math.isfinite(float(row["loss"])) and float(row["lr"]) == 1e-4

    # MoEISR over the full LIIF: 4 depth experts, started from the step above (its hash differs from
    # the unmodified liif.yaml's, hence the explicit --init)
    init = ("--init", str(runs / "liif" / "final.pt"))
    assert run_cli(train_args("moeisr_liif", runs / "moeisr_liif", *SETS, profile="paper", extra=init)) == (0, "")
    moe = load_model(runs / "moeisr_liif" / "final.pt")
    assert moe.spec["args"]["experts"] == [[256], [256] * 2, [256] * 3, [256] * 4]
    assert math.isfinite(float(log_rows(runs / "moeisr_liif")[-1]["balance"]))
