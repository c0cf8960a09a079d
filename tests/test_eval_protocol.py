"""The evaluation protocol's per-model decoding settings: LTE's cell clamp, on real Set5 images."""

import pytest
import torch
from test_models_support import small_model

from moeisr.data.benchmark import list_images
from moeisr.data.degrade import degrade
from moeisr.data.images import load_image
from moeisr.evaluate.runner import LTE_CELL_CLAMP, ModelEntry, evaluate_one, protocol_cell_clamp
from moeisr.metrics import psnr
from moeisr.registry import models


def _moeisr_over(backbone):
    return models.make({"name": "moeisr", "args": {"backbone_spec": backbone.spec, "experts": [[16], [32, 32]]}})


def test_lte_and_moeisr_over_lte_take_lte_cell_clamp_and_liif_keeps_the_true_cell():
    torch.manual_seed(0)
    lte, liif = small_model("lte"), small_model("liif")
    assert protocol_cell_clamp(lte) == LTE_CELL_CLAMP == 4.0
    assert protocol_cell_clamp(_moeisr_over(lte)) == 4.0
    assert protocol_cell_clamp(liif) is None
    assert protocol_cell_clamp(_moeisr_over(liif)) is None
    assert protocol_cell_clamp(None) is None  # bicubic


@pytest.mark.data
def test_an_lte_row_beyond_x4_is_decoded_with_the_x4_cell():
    torch.manual_seed(0)
    lte = small_model("lte").eval()
    hr_full = load_image(list_images("Set5", limit=1)[0])[:, :96, :96]
    hr, lr = degrade(hr_full, 6)
    size = tuple(hr.shape[-2:])
    with torch.inference_mode():
        clamped = lte.upscale(lr[None], size, cell_clamp=4.0)
        true_cell = lte.upscale(lr[None], size)
    assert (clamped - true_cell).abs().max() > 1e-4  # the clamp changes this model's output at x6

    entry = ModelEntry("lte", lte, "h", cell_clamp=protocol_cell_clamp(lte))
    row = evaluate_one(entry, "Set5", "x", hr_full, 6, None, image_hash="x")
    assert row["psnr"] == float(psnr(clamped, hr[None], 6)[0])
    assert row["psnr"] != float(psnr(true_cell, hr[None], 6)[0])
