"""Data layer: where the data is, image I/O, MATLAB-compatible bicubic degradations, evaluation sets,
training samplers and checksum verification. Images are 3×H×W (or B×3×H×W) float tensors in [0, 1].
"""

from moeisr.data.benchmark import EVAL_SETS, BenchmarkPair, BenchmarkSet, iter_pairs, list_images, reference_lr_path
from moeisr.data.checksums import ChecksumProblem, check, verify
from moeisr.data.degrade import (
    crop_for_scale,
    crop_to_multiple,
    degrade,
    degrade_arbitrary,
    downsample,
    lr_size,
    resize,
    upscale_bicubic,
)
from moeisr.data.images import load_image, quantize_8bit, save_image, to_uint8
from moeisr.data.roots import data_root
from moeisr.data.train import ImplicitDownsampled, ImplicitFullImage, TrainImages, sample_seed

__all__ = [
    "EVAL_SETS",
    "BenchmarkPair",
    "BenchmarkSet",
    "ChecksumProblem",
    "ImplicitDownsampled",
    "ImplicitFullImage",
    "TrainImages",
    "check",
    "crop_for_scale",
    "crop_to_multiple",
    "data_root",
    "degrade",
    "degrade_arbitrary",
    "downsample",
    "iter_pairs",
    "list_images",
    "load_image",
    "lr_size",
    "quantize_8bit",
    "reference_lr_path",
    "resize",
    "sample_seed",
    "save_image",
    "to_uint8",
    "upscale_bicubic",
    "verify",
]
