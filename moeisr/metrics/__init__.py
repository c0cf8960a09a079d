"""Image-quality metrics as SR papers compute them: PSNR and SSIM (LIIF protocols) and LPIPS(alex).

Every metric takes B×3×H×W float tensors in [0, 1] (the SR is clamped, never rounded to 8 bits) and
returns one float64 value per image, shape (B,). `set_mean` gives the figure a table reports.
"""

from moeisr.metrics.color import rgb_to_y
from moeisr.metrics.lpips_alex import LPIPS, load_lpips, lpips
from moeisr.metrics.psnr_metric import psnr, set_mean
from moeisr.metrics.ssim_metric import ssim

__all__ = ["LPIPS", "load_lpips", "lpips", "psnr", "rgb_to_y", "set_mean", "ssim"]
