"""The pictures REPORT.md shows that need a model to run: expert maps and qualitative crops.

The pipeline decodes them (`expert_map_sample`, `qualitative_crops`) and writes them as 8-bit PNGs plus a JSON
index into a folder (`<results>/figures/data/`, `write_expert_maps`, `write_crops`); `moeisr.report.figures`
reads them back (`read_expert_maps`, `read_crops`) and draws the figures, so the report never runs a model.
Inputs are 3×H×W HR images in [0, 1], from which the protocol's LR is made with `moeisr.data.degrade.degrade`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from moeisr.data.degrade import degrade, upscale_bicubic
from moeisr.data.images import load_image, save_image
from moeisr.io import atomic_write_text
from moeisr.metrics import psnr
from moeisr.models.moe.colors import colorize_expert_map


def expert_map_sample(
    title: str, hr: torch.Tensor, scale: float, models: Mapping[str, torch.nn.Module], device: str = "cpu"
) -> ExpertMapSample:
    """The expert maps of `models` (name → MoEISR in eval mode) on the protocol LR of `hr` (3×H×W in [0, 1])."""
    hr_cropped, lr = degrade(hr, scale)
    sample = ExpertMapSample(title=title, lr=lr)
    size = tuple(hr_cropped.shape[-2:])
    for name, model in models.items():
        with torch.inference_mode():
            experts = model.expert_map(lr[None].to(device), size)[0].cpu()
        colored, shares = colorize_expert_map(experts, model.n_experts)
        sample.maps.append((name, colored, shares.tolist()))
    return sample


def best_box(score: torch.Tensor, size: int, step: int) -> tuple[int, int]:
    """(top, left), multiples of `step`, of the size×size window of `score` (H×W) with the largest sum."""
    integral = torch.nn.functional.pad(score.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    height, width = score.shape
    tops = torch.arange(0, max(height - size, 0) + 1, step)
    lefts = torch.arange(0, max(width - size, 0) + 1, step)
    bottoms, rights = (tops + size).clamp(max=height), (lefts + size).clamp(max=width)
    sums = (
        integral[bottoms][:, rights]
        - integral[tops][:, rights]
        - integral[bottoms][:, lefts]
        + integral[tops][:, lefts]
    )
    best = int(sums.argmax())
    return int(tops[best // len(lefts)]), int(lefts[best % len(lefts)])


def qualitative_crops(
    title: str,
    hr: torch.Tensor,
    scale: int,
    models: Mapping[str, torch.nn.Module | None],
    crop: int = 48,
    device: str = "cpu",
) -> QualitativeCrops:
    """HR, bicubic and each model's SR of `hr` (3×H×W in [0, 1]) at integer `scale`, on one crop.

    models: label → model, None for bicubic. Every method upscales the whole LR image; the crop is the window
    where the learned models gain most over bicubic (squared error on the mean of RGB, summed over the window):
    where super-resolution recovers structure, so the methods' differences show. (The window of most gradient
    energy, used before, picked foliage that no method restores.) The crop side (HR px) is a multiple of
    `scale`, shrunk to fit small images.
    """
    hr_cropped, lr = degrade(hr, scale)
    H, W = hr_cropped.shape[-2:]
    side = max(scale, min(crop, H // 2, W // 2) // scale * scale)
    batch = lr[None].to(device)
    outputs = {}
    for label, model in models.items():
        with torch.inference_mode():
            sr = upscale_bicubic(batch, (H, W)) if model is None else model.upscale(batch, (H, W))
        outputs[label] = sr[0].clamp(0, 1).cpu()

    def squared_error(image: torch.Tensor) -> torch.Tensor:
        return (image.mean(0) - hr_cropped.mean(0)) ** 2

    bicubic = next((outputs[label] for label, model in models.items() if model is None), None)
    if bicubic is None:
        bicubic = upscale_bicubic(lr[None], (H, W))[0].clamp(0, 1)
    score = squared_error(bicubic)  # with no learned model: the window of most detail
    learned = [squared_error(outputs[label]) for label, model in models.items() if model is not None]
    if learned:
        score = score - torch.stack(learned).mean(0)
    top, left = best_box(score, side, scale)
    target = hr_cropped[:, top : top + side, left : left + side]
    result = QualitativeCrops(title=title, hr=hr_cropped, box=(top, left, side, side))
    result.panels.append(("HR", target, None))
    for label, sr in outputs.items():
        piece = sr[:, top : top + side, left : left + side]
        result.panels.append((label, piece, float(psnr(piece[None], target[None], scale)[0])))
    return result


@dataclass
class ExpertMapSample:
    """One image: its LR input and, per MoEISR model, the coloured expert map and the pixel shares."""

    title: str
    lr: torch.Tensor  # 3×h×w in [0, 1]
    maps: list[tuple[str, torch.Tensor, list[float]]] = field(default_factory=list)  # (model, 3×H×W, shares)


@dataclass
class QualitativeCrops:
    """Crops of one image: the full HR with the crop box, then (label, crop 3×h×w, PSNR dB or None) panels."""

    title: str
    hr: torch.Tensor
    box: tuple[int, int, int, int]  # top, left, height, width in HR pixels
    panels: list[tuple[str, torch.Tensor, float | None]] = field(default_factory=list)


def _png(image: torch.Tensor, folder: Path, name: str) -> str:
    save_image(image.clamp(0, 1), folder / name)
    return name


def write_expert_maps(samples: Sequence[ExpertMapSample], folder: str | os.PathLike) -> Path:
    """Write each sample's LR and expert maps as PNGs and `expert_maps.json` (titles, files, shares) in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for i, sample in enumerate(samples):
        item = {"title": sample.title, "lr": _png(sample.lr, folder, f"map{i}_lr.png"), "maps": []}
        for name, colored, shares in sample.maps:
            file = _png(colored, folder, f"map{i}_{name}.png")
            item["maps"].append({"model": name, "file": file, "shares": [float(x) for x in shares]})
        index.append(item)
    return atomic_write_text(folder / "expert_maps.json", json.dumps(index, indent=1) + "\n")


def write_crops(crops: QualitativeCrops, folder: str | os.PathLike) -> Path:
    """Write the HR image, each panel's crop as PNGs and `crops.json` (title, box, labels, PSNRs) in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    item = {"title": crops.title, "hr": _png(crops.hr, folder, "crop_hr.png"), "box": list(crops.box), "panels": []}
    for i, (label, piece, value) in enumerate(crops.panels):
        item["panels"].append({"label": label, "file": _png(piece, folder, f"crop{i}.png"), "psnr": value})
    return atomic_write_text(folder / "crops.json", json.dumps(item, indent=1) + "\n")


def read_expert_maps(folder: str | os.PathLike) -> list[ExpertMapSample]:
    """The expert-map samples the pipeline wrote (`moeisr.pipeline.pictures.write_expert_maps`) in `folder`."""
    folder = Path(folder)
    index = folder / "expert_maps.json"
    if not index.is_file():
        return []
    samples = []
    for item in json.loads(index.read_text(encoding="utf-8")):
        sample = ExpertMapSample(title=item["title"], lr=load_image(folder / item["lr"]))
        for entry in item["maps"]:
            sample.maps.append((entry["model"], load_image(folder / entry["file"]), entry["shares"]))
        samples.append(sample)
    return samples


def read_crops(folder: str | os.PathLike) -> QualitativeCrops | None:
    """The qualitative crops the pipeline wrote (`moeisr.pipeline.pictures.write_crops`) in `folder`, or None."""
    folder = Path(folder)
    index = folder / "crops.json"
    if not index.is_file():
        return None
    item = json.loads(index.read_text(encoding="utf-8"))
    crops = QualitativeCrops(title=item["title"], hr=load_image(folder / item["hr"]), box=tuple(item["box"]))
    for panel in item["panels"]:
        crops.panels.append((panel["label"], load_image(folder / panel["file"]), panel["psnr"]))
    return crops
