"""Training data: image sources and LIIF's "sr-implicit-downsampled" sampling, reproducible by index.

A sample depends only on (seed, epoch, index): its torch.Generator is seeded with
    sample_seed(seed, epoch, index) = int.from_bytes(SHA-256(f"moeisr-train:{seed}:{epoch}:{index}")[:8],
                                                     "little") & (2**63 - 1)
so any sample can be rebuilt exactly (e.g. after resuming mid-epoch), whatever the worker or order.

Per sample (ImplicitDownsampled): s ~ U(scale_min, scale_max); a random square HR crop of
round(inp_size * s) pixels; LR = bicubic resize of the crop to inp_size (moeisr.data.degrade.resize);
random horizontal flip, vertical flip and transpose applied identically to both; then `sample_q` HR
pixels drawn without replacement with their coordinates (make_coord of the HR crop) and cells
(2 / H_crop, 2 / W_crop).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from moeisr.coords import make_cell, make_coord
from moeisr.data.degrade import degrade, resize
from moeisr.data.images import image_size, load_image
from moeisr.data.layout import ALL_SETS, canonical_set_name, image_files, set_hr_dir
from moeisr.data.roots import data_root
from moeisr.errors import UserError

DEFAULT_SOURCES = ("T91", "BSD200")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Deterministic 63-bit seed of one sample (module docstring); independent of PYTHONHASHSEED."""
    digest = hashlib.sha256(f"moeisr-train:{int(seed)}:{int(epoch)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU torch.Generator seeded with sample_seed(seed, epoch, index)."""
    generator = torch.Generator()
    generator.manual_seed(sample_seed(seed, epoch, index))
    return generator


def _source_dir(source: str | os.PathLike, root: Path | None) -> Path:
    """A known set name (T91, BSD200, DIV2K_train, ...) or an existing image folder."""
    text = str(source)
    if text.lower() in {name.lower() for name in ALL_SETS}:
        return set_hr_dir(canonical_set_name(text), data_root(root))
    if Path(text).expanduser().is_dir():
        return Path(text).expanduser()
    return set_hr_dir(canonical_set_name(text), data_root(root))  # raises with the nearest set name


class TrainImages(torch.utils.data.Dataset):
    """Images of one or more sources (set names like "T91", "BSD200", "DIV2K_train", or folders), sorted per source.

    Item i is a 3×H×W float32 tensor in [0, 1]. cache=True keeps decoded images in memory (per instance,
    hence per DataLoader worker) after their first use.
    """

    def __init__(
        self,
        sources: Sequence[str | os.PathLike] = DEFAULT_SOURCES,
        root: str | os.PathLike | None = None,
        cache: bool = False,
        limit: int | None = None,
        paths: Sequence[Path] | None = None,
    ):
        if paths is None:
            if isinstance(sources, (str, os.PathLike)):
                sources = [sources]
            root_path = Path(root) if root is not None else None
            paths = []
            for source in sources:
                folder = _source_dir(source, root_path)
                found = image_files(folder)
                if not found:
                    raise UserError(f"training source {source}: no image files in {folder}")
                paths.extend(found)
        self.paths = list(paths)[:limit] if limit is not None else list(paths)
        if not self.paths:
            raise UserError("no training images selected; check the sources and limit")
        self.cache = cache
        self._decoded: dict[int, torch.Tensor] = {}
        self._sizes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        if index in self._decoded:
            return self._decoded[index]
        image = load_image(self.paths[index])
        if self.cache:
            self._decoded[index] = image
        return image

    def size(self, index: int) -> tuple[int, int]:
        """(height, width) of image `index`, from the file header (no decode)."""
        if index not in self._sizes:
            self._sizes[index] = image_size(self.paths[index])
        return self._sizes[index]

    def at_least(self, min_size: int) -> TrainImages:
        """The images whose both sides are >= min_size; each skipped file is warned about once, by name."""
        keep = []
        for index, path in enumerate(self.paths):
            h, w = self.size(index)
            if h >= min_size and w >= min_size:
                keep.append(index)
            else:
                warnings.warn(
                    f"{path}: {h}x{w} is smaller than the {min_size}x{min_size} HR patch needed; skipped",
                    UserWarning,
                    stacklevel=3,
                )
        if not keep:
            folders = ", ".join(sorted({str(p.parent) for p in self.paths}))
            raise UserError(
                f"every training image in {folders} is smaller than the {min_size}x{min_size} HR patch needed "
                "(data.inp_size * data.scale_max); add larger images or lower data.inp_size or data.scale_max"
            )
        subset = TrainImages(paths=[self.paths[i] for i in keep], cache=self.cache)
        subset._sizes = {new: self._sizes[old] for new, old in enumerate(keep)}
        subset._decoded = {new: self._decoded[old] for new, old in enumerate(keep) if old in self._decoded}
        return subset


class ImplicitDownsampled(torch.utils.data.Dataset):
    """LIIF's "sr-implicit-downsampled" training wrapper (module docstring), reproducible by (seed, epoch, index).

    Each item is a dict:
      inp   3×inp_size×inp_size LR crop in [0, 1]
      coord Q×2 HR pixel-centre coordinates (row, col) in [-1, 1]
      cell  Q×2, every row (2 / H_crop, 2 / W_crop)
      gt    Q×3 HR RGB in [0, 1] at those coordinates
    with Q = sample_q (all H_crop * W_crop pixels when sample_q is None). Length = len(images) * repeat.
    quantize rounds the LR to 8-bit levels (off by default, as in LIIF's training). Images smaller than the
    largest HR crop, round(inp_size * scale_max), are skipped with a warning naming each file.
    """

    def __init__(
        self,
        images: TrainImages,
        inp_size: int = 48,
        scale_min: float = 1.0,
        scale_max: float = 4.0,
        augment: bool = True,
        sample_q: int | None = 2304,
        seed: int = 0,
        repeat: int = 1,
        quantize: bool = False,
        epoch: int = 0,
    ):
        if not 1 <= scale_min <= scale_max:
            raise UserError(f"need 1 <= scale_min <= scale_max, got scale_min={scale_min}, scale_max={scale_max}")
        if inp_size < 1 or repeat < 1:
            raise UserError(f"inp_size and repeat must be positive, got inp_size={inp_size}, repeat={repeat}")
        smallest = round(inp_size * scale_min) ** 2
        if sample_q is not None and not 1 <= sample_q <= smallest:
            raise UserError(
                f"sample_q={sample_q} must be in 1..{smallest} (HR pixels of the smallest crop, "
                f"round(inp_size * scale_min)^2); lower sample_q or raise inp_size"
            )
        self.patch_max = round(inp_size * scale_max)
        self.images = images.at_least(self.patch_max)
        self.inp_size = inp_size
        self.scale_min = float(scale_min)
        self.scale_max = float(scale_max)
        self.augment = augment
        self.sample_q = sample_q
        self.seed = seed
        self.repeat = repeat
        self.quantize = quantize
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples __getitem__ returns (call before each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images) * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        g = sample_generator(self.seed, self.epoch, index)
        image = self.images[index % len(self.images)]
        u = torch.rand((), generator=g, dtype=torch.float64).item()
        scale = self.scale_min + (self.scale_max - self.scale_min) * u
        side = round(self.inp_size * scale)
        H, W = image.shape[-2:]
        top = int(torch.randint(0, H - side + 1, (), generator=g))
        left = int(torch.randint(0, W - side + 1, (), generator=g))
        hr = image[:, top : top + side, left : left + side]
        lr = resize(hr, (self.inp_size, self.inp_size), quantize=self.quantize)
        if self.augment:
            hflip, vflip, transpose = (torch.rand(3, generator=g) < 0.5).tolist()
            hr, lr = (_augment(t, hflip, vflip, transpose) for t in (hr, lr))
        coord = make_coord(tuple(hr.shape[-2:]))
        gt = hr.reshape(3, -1).T
        if self.sample_q is not None:
            chosen = torch.randperm(coord.shape[0], generator=g)[: self.sample_q]
            coord, gt = coord[chosen], gt[chosen]
        cell = make_cell(coord, tuple(hr.shape[-2:]))
        return {"inp": lr.contiguous(), "coord": coord, "cell": cell, "gt": gt.contiguous()}


def _augment(t: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if hflip:
        t = t.flip(-1)
    if vflip:
        t = t.flip(-2)
    if transpose:
        t = t.transpose(-2, -1)
    return t


class ImplicitFullImage(torch.utils.data.Dataset):
    """Whole images at a fixed scale, LIIF-style (for validation): dict of
    inp 3×h×w LR (degrade: LIIF's crop rule, MATLAB bicubic, 8-bit when quantize), coord (H*W)×2,
    cell (H*W)×2 and gt (H*W)×3 of the matching HR crop, all in [-1, 1] / [0, 1]. Use batch size 1.
    """

    def __init__(self, images: TrainImages, scale: float, quantize: bool = True):
        self.images = images
        self.scale = float(scale)
        self.quantize = quantize

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        hr, lr = degrade(self.images[index], self.scale, quantize=self.quantize)
        coord = make_coord(tuple(hr.shape[-2:]))
        return {
            "inp": lr,
            "coord": coord,
            "cell": make_cell(coord, tuple(hr.shape[-2:])),
            "gt": hr.reshape(3, -1).T.contiguous(),
        }
