"""Validation during training: the PSNR of a real Set5 image is logged in log.csv.

One full 512×512 decode with the paper's 256-wide decoder: the slowest training test (~15-30 s).
"""

import pytest
from test_train_support import log_rows, one_thread, run_cli, train_args  # noqa: F401 (fixture)

pytestmark = pytest.mark.data  # the shared images (tests/shared_data.py)


def test_validation_psnr_is_logged(tmp_path, one_thread):  # noqa: F811
    sets = ["data.val_set=Set5", "data.val_limit=1", "data.val_scale=4", "train.val_every=20", "optim.max_steps=20"]
    assert run_cli(train_args("lte", tmp_path / "lte", *sets)) == (0, "")
    rows = log_rows(tmp_path / "lte")
    assert [r["val_psnr"] for r in rows[:-1]] == ["", "", ""]
    # x4 on Set5 'baby': LTE's bilinear skip alone gives ~29 dB, a barely trained model lands near it
    assert 20 < float(rows[-1]["val_psnr"]) < 40
