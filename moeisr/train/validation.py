"""Validation during training: mean PSNR on the first N images of an evaluation set at one scale.

The pairs follow the benchmark protocol (`moeisr.data.BenchmarkSet`: LIIF's crop rule, MATLAB bicubic,
8-bit LR), the SR is the model's `upscale` in eval mode, and PSNR is `moeisr.metrics.psnr` with the
"benchmark" protocol (Y channel, shave = scale), or "div2k" (RGB, shave = scale + 6) on DIV2K.
"""

from __future__ import annotations

import torch
from torch import nn

from moeisr.data.benchmark import BenchmarkSet
from moeisr.metrics import psnr, set_mean


class Validator:
    """PSNR of a model on `set_name` ×`scale`, first `limit` images (None = all); pairs are built once."""

    def __init__(self, set_name: str, scale: float, limit: int | None = None, chunk_size: int = 65536):
        self.dataset = BenchmarkSet(set_name, scale, limit=limit)
        self.protocol = "div2k" if self.dataset.set_name.startswith("DIV2K") else "benchmark"
        self.chunk_size = chunk_size
        self._pairs = None

    def __call__(self, model: nn.Module, device: torch.device) -> float:
        """Mean PSNR (dB) over the images; the model is put back in its previous train/eval mode."""
        if self._pairs is None:
            self._pairs = list(self.dataset)
        was_training = model.training
        model.eval()
        try:
            values = []
            for pair in self._pairs:
                sr = model.upscale(pair.lr[None].to(device), tuple(pair.hr.shape[-2:]), chunk_size=self.chunk_size)
                values.append(psnr(sr.cpu(), pair.hr[None], pair.scale, protocol=self.protocol))
        finally:
            model.train(was_training)
        return set_mean(values)
