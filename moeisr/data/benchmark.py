"""Evaluation sets: Set5, Set14, B100, Urban100 (shared data) and DIV2K validation (if the user has it).

`list_images` gives the HR files; `BenchmarkSet` yields (name, HR, LR) pairs at a scale, with the LR made
by our MATLAB-compatible degradation (`moeisr.data.degrade.degrade`) or read from the reference files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from moeisr.data.degrade import crop_to_multiple, degrade
from moeisr.data.images import load_image
from moeisr.data.layout import (
    BENCHMARK_SETS,
    canonical_set_name,
    image_extensions,
    image_files,
    reference_lr_dir,
    set_hr_dir,
)
from moeisr.data.roots import data_root
from moeisr.errors import UserError

EVAL_SETS = (*BENCHMARK_SETS, "DIV2K")


def list_images(set_name: str, root: str | os.PathLike | None = None, limit: int | None = None) -> list[Path]:
    """HR image files of an evaluation or training set, sorted by name; the first `limit` if given.

    Any image format Pillow reads is accepted (png, webp, bmp, jpg...). UserError if the set is unknown
    (naming the nearest valid name), its folder is missing, or it holds no images.
    """
    name = canonical_set_name(set_name)
    folder = set_hr_dir(name, data_root(root))
    files = image_files(folder)
    if not files:
        raise UserError(f"{name}: no image files in {folder}; check the data root")
    if limit is not None:
        if limit < 1:
            raise UserError(f"limit must be a positive number of images, got {limit}")
        files = files[:limit]
    return files


def reference_lr_path(
    set_name: str, hr_path: str | os.PathLike, scale: int, root: str | os.PathLike | None = None
) -> Path | None:
    """The reference LR file `<LR_bicubic>/X{k}/<stem>x{k}.<any ext>` for an HR file, or None if absent.

    Only integer scales have reference files (Set5, Set14, B100 in the shared data; DIV2K if present).
    """
    name = canonical_set_name(set_name)
    if float(scale) != int(scale):
        return None
    k = int(scale)
    folder = reference_lr_dir(name, data_root(root), k)
    if folder is None:
        return None
    stem = f"{Path(hr_path).stem}x{k}"
    exts = image_extensions()
    matches = sorted(p for p in folder.glob(f"{stem}.*") if p.suffix.lower() in exts)
    return matches[0] if matches else None


@dataclass(frozen=True)
class BenchmarkPair:
    """One evaluation sample. hr: 3×H×W ground truth (cropped to match lr), lr: 3×h×w, both in [0, 1]."""

    name: str
    hr: torch.Tensor
    lr: torch.Tensor
    scale: float


class BenchmarkSet(torch.utils.data.Dataset):
    """(name, HR, LR) pairs of an evaluation set at one scale.

    lr_source: "generated" degrades the HR with `degrade` (any real scale >= 1, LIIF's crop rule, 8-bit LR
    when quantize); "reference" reads the reference LR files (integer scales only; HR cropped to a
    multiple of the scale), UserError naming the first missing file.
    """

    def __init__(
        self,
        set_name: str,
        scale: float,
        root: str | os.PathLike | None = None,
        limit: int | None = None,
        lr_source: Literal["generated", "reference"] = "generated",
        quantize: bool = True,
    ):
        if lr_source not in ("generated", "reference"):
            raise UserError(f"lr_source must be 'generated' or 'reference', got {lr_source!r}")
        self.set_name = canonical_set_name(set_name)
        self.root = data_root(root)
        self.scale = float(scale)
        self.lr_source = lr_source
        self.quantize = quantize
        self.paths = list_images(self.set_name, self.root, limit)
        if lr_source == "reference":
            self.lr_paths = [self._reference(p) for p in self.paths]

    def _reference(self, hr_path: Path) -> Path:
        found = reference_lr_path(self.set_name, hr_path, self.scale, self.root)
        if found is None:
            raise UserError(
                f"{self.set_name}: no reference LR for {hr_path.name} at x{self.scale:g}; "
                "use lr_source='generated' or another scale"
            )
        return found

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> BenchmarkPair:
        path = self.paths[index]
        hr = load_image(path)
        if self.lr_source == "reference":
            hr = crop_to_multiple(hr, int(self.scale))
            lr = load_image(self.lr_paths[index])
            expected = (hr.shape[-2] // int(self.scale), hr.shape[-1] // int(self.scale))
            if tuple(lr.shape[-2:]) != expected:
                raise UserError(
                    f"{self.lr_paths[index]}: reference LR is {lr.shape[-2]}x{lr.shape[-1]}, expected "
                    f"{expected[0]}x{expected[1]} for {path.name} at x{self.scale:g}; replace the file"
                )
        else:
            hr, lr = degrade(hr, self.scale, quantize=self.quantize)
        return BenchmarkPair(path.stem, hr, lr, self.scale)

    def __iter__(self) -> Iterator[BenchmarkPair]:
        for index in range(len(self)):
            yield self[index]


def iter_pairs(set_name: str, scale: float, **options) -> Iterator[BenchmarkPair]:
    """Iterate the BenchmarkPairs (name, hr 3×H×W, lr 3×h×w, in [0, 1]) of `set_name` at `scale`, lazily.

    options: root, limit, lr_source, quantize (keywords), as for BenchmarkSet.
    """
    yield from BenchmarkSet(set_name, scale, **options)
