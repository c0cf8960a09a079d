"""CMSR (controllable multi-scale rendering) for LM-LIIF / LM-LTE, with its MSE threshold as an inference knob.

What CMSR does (official LMF, our reading). Each LR pixel has a modulation mean m, the mean absolute value of
the official `mod[:, mod_dim // 2 : mod_dim]` channels (the shifts, when scales and shifts are modulated). Where
m is small the render MLP is close to unmodulated and the image is smooth, so the pixel can be rendered at a
lower scale s < S and upsampled bilinearly to the target scale S without losing more than a given MSE. A
scale-to-mean table gives, for the target S, thresholds t_1 <= t_2 <= ... for decode scales s_1 < s_2 < ... < S.
Rendering then goes level by level: start from the LR image, upsample it bilinearly to the grid of s_1
(int(h·s_1) × int(w·s_1)), render there the points whose LR pixel has m < t_1, upsample the result to the
grid of s_2, render the points with t_1 <= m < t_2, ..., upsample to the output grid and render there the
pixels with m >= t_last. Every level uses the modulations computed for the target's cell; its render input
uses its own cell, 2/grid side, enlarged to the training maximum scale (×max(s / 4, 1)). As in the official code
CMSR only runs out of the training distribution, above ×4 (more than 16 output pixels per LR pixel).

The table (`CMSRTable`, built by `build_cmsr_table` from a model and LR images). The official method
(`init_cmsr.py`, `update_scale2mean`) builds thresholds for one MSE threshold from training images: per image and
decode scale it renders the image fully at s, upsamples it to S and compares it with the full render at S,
within windows of m. We store the measurements instead of one threshold: for every target S, decode scale s
and bin of m, the worst (over the images) MSE of the pixels in that bin. The thresholds of any MSE threshold
then follow at inference (`CMSRTable.thresholds(mse)`), which makes the MSE threshold a knob (`cmsr_mse`, in
the official units: MSE of images in [-1, 1]; the official default 2e-5 is 5e-6 on [0, 1] images). The walk:
for s ascending, starting at the first bin not yet given to a lower scale, extend over bins whose worst MSE is
within the threshold (empty bins are passed over, as the official NaN losses are), stop at the first bin that
fails; t_s is the upper edge of the last bin that passed, or t of the previous scale if none did.

Off = the official output exactly: `cmsr_mse` None or 0, no table, a scale of at most ×4, or no pixel below the
target level all give the plain `upscale` result bit for bit (the last case renders every output pixel in the
same chunks as `upscale`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from moeisr.coords import make_coord
from moeisr.models import base
from moeisr.models.base import DEFAULT_CHUNK_SIZE, cell_scale_factors, output_size, upscale
from moeisr.models.decoders.local_grid import nearest_cells

if TYPE_CHECKING:  # annotations only: common.py imports this module when CMSR is used
    from moeisr.models.lmf.common import LatentModulatedSR

# The largest training scale of the official LMF configs (`max_scale`): CMSR only runs above it, and its
# rendering levels clamp their cells to it.
MAX_TRAINING_SCALE = 4

# the official candidate decode scales (`init_cmsr.py`); a table for target S uses those below S
DEFAULT_DECODE_SCALES = (1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32)
DEFAULT_TARGET_SCALES = (6, 8, 12)
DEFAULT_BINS = 100
# the official default MSE threshold (images in [-1, 1])
OFFICIAL_MSE = 2e-5


# ------------------------------------------------------------------------------------------------ tables
@dataclass
class CMSRTable:
    """Measured scale-to-mean statistics. For each target scale S: `edges[S]`, the n_bins + 1 edges of the bins
    of the modulation mean m (from 0 to the largest m seen at S), and `worst[S][s]`, per bin, the worst MSE
    (images in [-1, 1]) over the calibration images of rendering at decode scale s and upsampling to S (NaN:
    no pixel in that bin). `pixels[S]`: calibration pixels per bin."""

    edges: dict[float, list[float]]
    worst: dict[float, dict[float, list[float]]]
    pixels: dict[float, list[int]] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def thresholds(self, mse: float) -> dict[float, dict[float, float]]:
        """{S: {s: t_s}} for MSE threshold `mse` (module docstring), in the official s2m table format."""
        out: dict[float, dict[float, float]] = {}
        for target in sorted(self.worst):
            edges, t_prev, first = self.edges[target], 0.0, 0
            table = {}
            for s in sorted(self.worst[target]):
                passed = None
                for b in range(first, len(edges) - 1):
                    value = self.worst[target][s][b]
                    if math.isnan(value):
                        continue
                    if value > mse:
                        break
                    passed = b
                if passed is not None:
                    t_prev, first = edges[passed + 1], passed + 1
                table[s] = t_prev
            out[target] = table
        return out

    def to_dict(self) -> dict:
        """Plain data (floats, lists, dicts; NaN kept as float) for yaml/json/torch.save."""
        return {
            "format": "moeisr-cmsr-table",
            "edges": {float(k): list(v) for k, v in self.edges.items()},
            "worst": {float(k): {float(s): list(v) for s, v in d.items()} for k, d in self.worst.items()},
            "pixels": {float(k): list(v) for k, v in self.pixels.items()},
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> CMSRTable:
        return cls(
            edges={float(k): [float(x) for x in v] for k, v in data["edges"].items()},
            worst={float(k): {float(s): [float(x) for x in v] for s, v in d.items()} for k, d in data["worst"].items()},
            pixels={float(k): [int(x) for x in v] for k, v in (data.get("pixels") or {}).items()},
            meta=dict(data.get("meta") or {}),
        )

    def official_spec(self, mse: float = OFFICIAL_MSE) -> dict:
        """An official-format `cmsr_spec` (fixed thresholds for `mse`), e.g. to store in a model spec."""
        return {"mse_threshold": float(mse), "s2m_tables": self.thresholds(mse), "log": False}


@dataclass
class FixedThresholds:
    """Official scale-to-mean tables ({S: {s: t}}), used as they are whatever the knob's (positive) value."""

    tables: dict[float, dict[float, float]]

    def thresholds(self, mse: float) -> dict[float, dict[float, float]]:
        return self.tables


def as_threshold_source(table) -> CMSRTable | FixedThresholds:
    """A CMSRTable, FixedThresholds, `CMSRTable.to_dict()` output or official s2m tables ({S: {s: t}})."""
    if isinstance(table, (CMSRTable, FixedThresholds)):
        return table
    if isinstance(table, Mapping) and table.get("format") == "moeisr-cmsr-table":
        return CMSRTable.from_dict(table)
    if isinstance(table, Mapping) and all(isinstance(v, Mapping) for v in table.values()):
        return FixedThresholds({float(k): {float(s): float(t) for s, t in v.items()} for k, v in table.items()})
    raise ValueError(f"not a CMSR table: {type(table).__name__} (expected CMSRTable or official s2m tables)")


def apply_official_cmsr_spec(model: LatentModulatedSR, cmsr_spec: Mapping) -> None:
    """A `cmsr_spec` model arg, in one of two forms:

    - official: `s2m_tables` ({S: {s: t}}) as fixed thresholds, CMSR on at `mse_threshold` (official default 2e-5);
    - ours: `table`, a calibrated `CMSRTable.to_dict()` (written into bundled LMF checkpoints by
      `moeisr.pipeline.bundle`), CMSR off unless `mse_threshold` is given; the knob `cmsr_mse` turns it on.
    """
    if "updating_scale" in cmsr_spec:
        raise ValueError("cmsr_spec.updating_scale (the official table-building mode): use build_cmsr_table instead")
    if "table" in cmsr_spec:
        model.cmsr_table = as_threshold_source(cmsr_spec["table"])
        mse = cmsr_spec.get("mse_threshold")
        model.cmsr_mse = None if mse is None else float(mse) or None
        return
    if "s2m_tables" not in cmsr_spec:
        raise ValueError("cmsr_spec needs s2m_tables ({target scale: {decode scale: threshold}}) or a calibrated table")
    model.cmsr_table = as_threshold_source(cmsr_spec["s2m_tables"])
    model.cmsr_mse = float(cmsr_spec.get("mse_threshold", OFFICIAL_MSE)) or None


def levels_for(thresholds: Mapping[float, Mapping[float, float]], scale: float) -> list[tuple[float, float]]:
    """The (decode scale, threshold) levels below `scale`: from the table of the first target >= scale (else the
    largest), its decode scales s with 1 <= s < scale, ascending (official lookup)."""
    if not thresholds:
        return []
    keys = sorted(thresholds)
    table = thresholds[next((k for k in keys if k >= scale), keys[-1])]
    return [(float(s), float(t)) for s, t in sorted(table.items()) if 1 <= s < scale]


# ------------------------------------------------------------------------------------------- rendering
def level_map(mod_mean: torch.Tensor, thresholds: Sequence[float]) -> torch.Tensor:
    """Level of each LR pixel: the first i with m < thresholds[i], else len(thresholds) (the target)."""
    level = torch.full(mod_mean.shape, len(thresholds), dtype=torch.long, device=mod_mean.device)
    for i in reversed(range(len(thresholds))):
        level = torch.where(mod_mean < thresholds[i], torch.full_like(level, i), level)
    return level


def _grid_coord(size: tuple[int, int], device, dtype) -> torch.Tensor:
    return make_coord(size, device=device, dtype=dtype).unsqueeze(0)


def _resample(img: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Bilinear (border) samples of 1×3×h×w `img` at 1×N×2 coords → 1×N×3."""
    out = F.grid_sample(img, coord.flip(-1).unsqueeze(1), mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0, :].transpose(1, 2)


def _render_points(model, features, state, coord, cell_value, chunk_size) -> torch.Tensor:
    """Render 1×N×2 `coord` with one cell value (2,) in chunks → 1×N×3 in [0, 1] (not clamped)."""
    n = coord.shape[1]
    out = coord.new_empty(1, n, 3)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        c = coord[:, start:stop]
        out[:, start:stop] = model.render(features, state, c, cell_value.expand(1, stop - start, 2))
    return out


def _level_of_points(level: torch.Tensor, features, coord: torch.Tensor) -> torch.Tensor:
    """The LR-pixel level (h×w map `level`) of each of the 1×N×2 points (nearest LR cell, as the official
    nearest `grid_sample` of mod_mean) → N."""
    rows, cols, _ = nearest_cells(coord, features["index_map"], local_ensemble=False)
    return level[rows.view(-1), cols.view(-1)]


def _cmsr_one(model: LatentModulatedSR, lr, size, levels, chunk_size, cell_factors) -> torch.Tensor:
    """CMSR for one image (1×3×h×w) at `size`, `levels` [(s, t)] below the target → 1×3×H×W clamped."""
    _, _, h, w = lr.shape
    H, W = size
    device, dtype = lr.device, lr.dtype
    features = model.encode(lr)
    cell_value = torch.tensor([2.0 / H, 2.0 / W], dtype=dtype, device=device)
    cell_value = cell_value * torch.tensor(cell_factors, dtype=dtype, device=device)
    state = model.latent_state(features, cell_value.view(1, 2))
    level = level_map(state.mod_mean()[0], [t for _, t in levels])
    n_levels = len(levels)
    rows = make_coord((H,), device=device, dtype=dtype)[:, 0]
    cols = make_coord((W,), device=device, dtype=dtype)[:, 0]
    out = torch.empty(1, 3, H * W, dtype=dtype, device=device)
    if bool((level == n_levels).all()):  # nothing below the target: the chunks of `upscale`, same values
        for start in range(0, H * W, chunk_size):
            stop = min(start + chunk_size, H * W)
            index = torch.arange(start, stop, device=device)
            coord = torch.stack((rows[index // W], cols[index % W]), dim=-1).unsqueeze(0)
            pred = model.query(features, coord, cell_value.expand(1, stop - start, 2))
            out[:, :, start:stop] = pred.clamp(0, 1).transpose(1, 2)
        return out.view(1, 3, H, W)

    image = lr
    for i, (s, _) in enumerate(levels):
        if not bool((level == i).any()):
            continue  # official: a level without pixels is skipped, no resampling through its grid
        qh, qw = int(h * s), int(w * s)
        coord = _grid_coord((qh, qw), device, dtype)
        grid = _resample(image, coord)  # 1×N×3
        picked = torch.nonzero(_level_of_points(level, features, coord) == i).view(-1)
        q_cell = torch.tensor([2.0 / qh, 2.0 / qw], dtype=dtype, device=device) * max(s / MAX_TRAINING_SCALE, 1)
        grid[:, picked] = _render_points(model, features, state, coord[:, picked], q_cell, chunk_size)
        image = grid.transpose(1, 2).reshape(1, 3, qh, qw)
    coord = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).view(1, H * W, 2)
    result = _resample(image, coord)
    picked = torch.nonzero(_level_of_points(level, features, coord) == n_levels).view(-1)
    if picked.numel():
        result[:, picked] = _render_points(model, features, state, coord[:, picked], cell_value, chunk_size)
    out.copy_(result.clamp(0, 1).transpose(1, 2))
    return out.view(1, 3, H, W)


def upscale_with_cmsr(
    model: LatentModulatedSR,
    lr: torch.Tensor,
    size: tuple[int, int],
    mse: float | None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
    cell_clamp: float | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """`model.upscale` with CMSR at MSE threshold `mse` (module docstring); the plain `upscale` when CMSR is off,
    the scale is at most ×4 or the table has no level below the target. A batch is rendered image by image; the
    CMSR path shows no progress bar."""
    options = dict(chunk_size=chunk_size, progress=progress, cell_clamp=cell_clamp, precision=precision)
    if mse is not None and not (math.isfinite(float(mse)) and mse >= 0):
        raise ValueError(f"cmsr_mse must be None or a finite number >= 0, got {mse!r}")
    table = model.cmsr_table
    if mse is None or mse <= 0 or table is None or lr.dim() != 4:
        return upscale(model, lr, size, **options)
    H, W = int(size[0]), int(size[1])
    h, w = lr.shape[-2:]
    if H * W <= MAX_TRAINING_SCALE**2 * h * w:  # official: CMSR only out of the training distribution
        return upscale(model, lr, size, **options)
    levels = levels_for(table.thresholds(float(mse)), math.sqrt(H * W / (h * w)))
    if not levels:
        return upscale(model, lr, size, **options)
    if precision not in base.PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(base.PRECISIONS)}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    factors = cell_scale_factors((h, w), (H, W), cell_clamp)
    token = base._IN_UPSCALE.set(True)
    dtype_token = base._HIDDEN_DTYPE.set(base.PRECISIONS[precision])
    try:
        with torch.inference_mode():
            images = [_cmsr_one(model, lr[b : b + 1], (H, W), levels, chunk_size, factors) for b in range(len(lr))]
            return torch.cat(images)
    finally:
        base._HIDDEN_DTYPE.reset(dtype_token)
        base._IN_UPSCALE.reset(token)


# ---------------------------------------------------------------------------------------------- building
def _as_image(img: torch.Tensor) -> torch.Tensor:
    if img.dim() == 3:
        img = img.unsqueeze(0)
    if img.dim() != 4 or img.shape[:2] != (1, 3):
        raise ValueError(f"CMSR calibration images must be 3×h×w or 1×3×h×w, got {tuple(img.shape)}")
    return img


@torch.inference_mode()
def build_cmsr_table(
    model: LatentModulatedSR,
    lr_images: Iterable[torch.Tensor],
    target_scales: Sequence[float] = DEFAULT_TARGET_SCALES,
    decode_scales: Sequence[float] = DEFAULT_DECODE_SCALES,
    n_bins: int = DEFAULT_BINS,
    cell_clamp: float | None = MAX_TRAINING_SCALE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> CMSRTable:
    """Measure CMSR's scale-to-mean statistics of `model` on LR images (3×h×w or 1×3×h×w in [0, 1]).

    For every image and target scale S: the full render at S (output round(S·h) × round(S·w), the cell enlarged
    to ×`cell_clamp` as the official table builder does, ×max(S/4, 1)) is the reference; for every decode scale
    s in `decode_scales` with 1 <= s < S, the whole image is rendered on CMSR's level grid of s (int(s·h) ×
    int(s·w), the level's cell, the target's modulations, exactly as `upscale` renders that level), upsampled
    bilinearly to S and compared with the reference: per output pixel the MSE over RGB on [-1, 1] images
    (4× the MSE on [0, 1]), both clamped to the image range as `upscale` returns them. Pixels are binned by the
    modulation mean m of their nearest LR pixel into `n_bins` equal bins from 0 to the largest m seen at S; each
    bin keeps its worst per-image MSE. Takes the model's eval mode as it is (call `model.eval()`).
    """
    images = [_as_image(img) for img in lr_images]
    if not images:
        raise ValueError("build_cmsr_table needs at least one LR image")
    edges, worst, pixels = {}, {}, {}
    for target in sorted(float(s) for s in target_scales):
        runs = []
        for lr in images:
            h, w = lr.shape[-2:]
            H, W = output_size((h, w), target)
            features = model.encode(lr)
            cell = torch.tensor([2.0 / H, 2.0 / W], dtype=lr.dtype, device=lr.device)
            cell = cell * torch.tensor(cell_scale_factors((h, w), (H, W), cell_clamp), dtype=lr.dtype, device=lr.device)
            state = model.latent_state(features, cell.view(1, 2))
            coord = _grid_coord((H, W), lr.device, lr.dtype)
            rows, cols, _ = nearest_cells(coord, features["index_map"], local_ensemble=False)
            m = state.mod_mean()[0][rows.view(-1), cols.view(-1)]
            runs.append((lr, features, state, cell, coord, m))
        top = max(float(r[-1].max()) for r in runs)
        top = top if top > 0 else 1.0
        edges[target] = [top * i / n_bins for i in range(n_bins + 1)]
        scales = sorted(float(s) for s in decode_scales if 1 <= s < target)
        worst[target] = {s: [math.nan] * n_bins for s in scales}
        counts = torch.zeros(n_bins, dtype=torch.long)
        for lr, features, state, cell, coord, m in runs:
            h, w = lr.shape[-2:]
            bins = (m / top * n_bins).floor().long().clamp(0, n_bins - 1)
            counts += torch.bincount(bins, minlength=n_bins)
            reference = _render_points(model, features, state, coord, cell, chunk_size).clamp(0, 1)
            for s in scales:
                qh, qw = int(h * s), int(w * s)
                q_coord = _grid_coord((qh, qw), lr.device, lr.dtype)
                q_cell = torch.tensor([2.0 / qh, 2.0 / qw], dtype=lr.dtype, device=lr.device)
                q_cell = q_cell * max(s / MAX_TRAINING_SCALE, 1)
                low = _render_points(model, features, state, q_coord, q_cell, chunk_size)
                up = _resample(low.transpose(1, 2).reshape(1, 3, qh, qw), coord).clamp(0, 1)
                err = 4 * (up - reference).pow(2).mean(dim=-1).view(-1)
                sums = torch.zeros(n_bins, dtype=err.dtype).index_add_(0, bins, err)
                n = torch.bincount(bins, minlength=n_bins)
                for b in torch.nonzero(n).view(-1).tolist():
                    value = float(sums[b] / n[b])
                    old = worst[target][s][b]
                    worst[target][s][b] = value if math.isnan(old) else max(old, value)
        pixels[target] = counts.tolist()
    meta = {"n_images": len(images), "n_bins": n_bins, "cell_clamp": cell_clamp, "model": model.spec.get("name")}
    return CMSRTable(edges=edges, worst=worst, pixels=pixels, meta=meta)
