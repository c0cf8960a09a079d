"""`ImplicitSR`: the shape shared by LIIF, LTE and MoEISR, and the generic chunked `upscale`.

An implicit SR model is split in two:

- `encode(lr) -> features`: everything that depends only on the LR image (encoder features and the
  maps derived from them), computed once per image;
- `query(features, coord, cell, mlp=None) -> rgb`: decodes arbitrary query points.

Decoder path (`model.decoder_path`, an inference setting, not part of the spec or the state dict):
"as_published" evaluates the decoder exactly as the papers describe it; "as_executed" lets a decoder use
an exact reformulation that computes the same values with fewer operations (LIIF: its first MLP layer is
split into a per-LR-pixel and a per-query part, see docs/speed.md); "auto" (the default) is
"as_executed" inside `upscale` (which runs under inference_mode) unless a FLOPs counter is watching (a
jit trace, as fvcore's, or a dispatch mode, as torch's FlopCounterMode), and "as_published" everywhere
else: `forward`, `query`, MoEISR's `forward_train` (training) and FLOPs counts stay on the paper-faithful
path. Set "as_executed" explicitly to count the executed path.

`upscale` encodes once and then queries the output grid in chunks of `chunk_size` pixels whose
coordinates are generated per chunk, so memory stays bounded by the features, the output image and
one chunk, whatever the output size.

Decoder precision (`upscale(..., precision=)`, a per-call inference option): "fp32" (default) everywhere;
"bf16" runs the decoder MLPs' hidden and output layers as bfloat16 GEMMs (the first layer, with LIIF's
gather, stays fp32; the output is fp32 again). Not exact (max abs diff ~3e-3 on trained weights), so never a
default and never used for published numbers; opt-in where the CPU has fast bf16 (speed and PSNR change
measured in docs/speed.md §2).

Inference settings (attributes, not in the spec or the state dict; setting one on a model sets it on every
ImplicitSR inside, e.g. a MoEISR's backbone), applied by `run_encoder` with gradients off:
- `encode_tile_size` (default ENCODE_TILE_SIZE = 660): above encode_tile_size² LR pixels the encoder runs on
  overlapping tiles of at most encode_tile_size pixels a side, context included (`encode_tiled`), so its peak
  memory is bounded whatever the input size; the context covers the encoder's receptive field, so the
  features equal the untiled ones up to float rounding. None disables tiling.
- `channels_last` (default False; `prepare_for_inference` and `load_model` set it): the encoder input is made
  channels-last, so every convolution runs in oneDNN's faster NHWC layout (weights are left as they are).
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn
from tqdm import tqdm

from moeisr.coords import make_coord
from moeisr.errors import UserError

# The official data pipelines normalise images with data_norm {sub: 0.5, div: 0.5}; the models do it.
NORM_SUB = 0.5
NORM_DIV = 0.5

# Output pixels decoded per chunk. The LIIF decoder input for one chunk is about
# chunk_size × 4 shifts × 580 floats ≈ 300 MB at this size.
DEFAULT_CHUNK_SIZE = 32768

# Largest side (LR pixels, context included) of an encoder tile; images of at most this squared pixel count
# are encoded whole. RDN (config B) peaks at ~8.8 KB of activations per LR pixel, so a 660² tile stays under
# 4 GB (docs/speed.md §6); EDSR-baseline needs far less. A 1024² image takes 2×2 tiles (RDN: 643² each).
ENCODE_TILE_SIZE = 660

DECODER_PATHS = ("auto", "as_published", "as_executed")
# set while `upscale` runs (like torch's grad mode: scoped, per thread/context): "auto" means executed there
_IN_UPSCALE = contextvars.ContextVar("moeisr_in_upscale", default=False)
# set while an encoder runs for an "as executed" query (`ImplicitSR.run_encoder`): see `executing`
_EXECUTING = contextvars.ContextVar("moeisr_executing", default=False)

# the GEMM dtype of the decoder MLPs' hidden/output layers while `upscale(..., precision="bf16")` runs
_HIDDEN_DTYPE = contextvars.ContextVar("moeisr_hidden_dtype", default=None)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}

Features = dict[str, torch.Tensor]
T = TypeVar("T")
Decoder = Callable[[torch.Tensor], torch.Tensor]


def normalise(img: torch.Tensor) -> torch.Tensor:
    """[0, 1] image → the [-1, 1] range the official models were trained on."""
    return (img - NORM_SUB) / NORM_DIV


def denormalise(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `normalise` (no clamping)."""
    return x * NORM_DIV + NORM_SUB


def decoder_hidden_dtype() -> torch.dtype | None:
    """The dtype of the decoder MLPs' hidden/output GEMMs now: None (fp32, the default) or torch.bfloat16 while
    an `upscale(..., precision="bf16")` runs."""
    return _HIDDEN_DTYPE.get()


def executing() -> bool:
    """Whether the code running now belongs to an "as executed" encode (set by `ImplicitSR.run_encoder`).

    Modules may then skip work whose result is known exactly (EDSR's multiply by res_scale = 1, fresh
    tensors for residual sums). On the published path (training, `forward`, default FLOPs counts) it is
    False, so those see the paper's operations.
    """
    return _EXECUTING.get()


def compute_knob(model) -> str | None:
    """The `upscale` keyword of `model`'s inference compute knob (a model instance or class), or None.

    The one predicate for "does this model trade compute for quality at inference" (MoEISR's routing knob; any
    later method with such a knob sets `compute_knob_name`). None for bicubic (None) and plain LIIF/LTE.
    """
    return getattr(model, "compute_knob_name", None) if model is not None else None


class ImplicitSR(nn.Module):
    """Base class of arbitrary-scale models decoded per query point.

    Subclasses set `spec` ({"name", "args"}, enough to rebuild the model), `imnet` (the decoder MLP),
    `imnet_in_dim` and usually `encoder`, and implement `encode` (through `run_encoder`) and `query` (see
    the module docstring).
    """

    spec: dict
    imnet: nn.Module
    imnet_in_dim: int
    # The `upscale` keyword of the model's inference compute knob (MoEISR: "routing_knob"), None if it has none;
    # read it through `compute_knob`. `has_routing_loss`: trained with a routing loss (MoEISR).
    compute_knob_name: str | None = None
    has_routing_loss: bool = False

    def _set_everywhere(self, key: str, value) -> None:
        """An inference setting, on this model and every ImplicitSR inside (not saved in checkpoints)."""
        for module in self.modules():
            if isinstance(module, ImplicitSR):
                module.__dict__[key] = value

    @property
    def decoder_path(self) -> str:
        """ "auto" (default), "as_published" or "as_executed" (module docstring). Setting it also sets every
        ImplicitSR inside (e.g. a MoEISR's backbone). Not saved in checkpoints."""
        return self.__dict__.get("_decoder_path", "auto")

    @decoder_path.setter
    def decoder_path(self, value: str) -> None:
        if value not in DECODER_PATHS:
            raise UserError(f"decoder_path {value!r} is not one of {DECODER_PATHS}")
        self._set_everywhere("_decoder_path", value)

    @property
    def channels_last(self) -> bool:
        """Run the encoder on channels-last activations when gradients are off (module docstring)."""
        return self.__dict__.get("_channels_last", False)

    @channels_last.setter
    def channels_last(self, value: bool) -> None:
        self._set_everywhere("_channels_last", bool(value))

    @property
    def encode_tile_size(self) -> int | None:
        """Largest side of an encoder tile, None = never tile (module docstring; default ENCODE_TILE_SIZE)."""
        return self.__dict__.get("_encode_tile_size", ENCODE_TILE_SIZE)

    @encode_tile_size.setter
    def encode_tile_size(self, value: int | None) -> None:
        if value is not None and (int(value) != value or value < 1):
            raise UserError(f"encode_tile_size must be a positive integer or None, got {value!r}")
        self._set_everywhere("_encode_tile_size", None if value is None else int(value))

    def run_encoder(self, inp: torch.Tensor) -> torch.Tensor:
        """`self.encoder(inp)`: normalised B×3×h×w → B×C×h×w features, with the inference settings.

        With gradients on, or under a jit trace / dispatch mode (FLOPs counts), exactly `self.encoder(inp)`;
        otherwise channels-last input (`channels_last`) and tiles (`encode_tile_size`, `encode_tiled`). On the
        executed path the encoder runs with `executing()` set. The features equal `self.encoder(inp)` up to
        float rounding (tests: ≤ 1e-5).
        """
        token = _EXECUTING.set(self.uses_executed_path())
        try:
            if torch.is_grad_enabled() or _tracing_or_counting():
                return self.encoder(inp)
            if self.channels_last and inp.dim() == 4:
                inp = inp.contiguous(memory_format=torch.channels_last)
            return encode_tiled(self.encoder, inp, self.encode_tile_size)
        finally:
            _EXECUTING.reset(token)

    def uses_executed_path(self) -> bool:
        """Whether a query made now takes the "as executed" path (resolves "auto", see the module docstring)."""
        path = self.decoder_path
        if path == "auto":
            return _IN_UPSCALE.get() and not (torch.is_grad_enabled() or _tracing_or_counting())
        return path == "as_executed"

    def encode(self, lr: torch.Tensor) -> Features:
        """lr: B×3×h×w in [0, 1] → a dict of feature tensors; `"feat"` is the encoder output B×C×h×w."""
        raise NotImplementedError

    def query(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor, mlp: Decoder | None = None
    ) -> torch.Tensor:
        """Decode B×Q×2 coordinates with B×Q×2 cells → B×Q×3 RGB in the [0, 1] range (not clamped)."""
        raise NotImplementedError

    def forward(self, lr: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Training entry point: `query(encode(lr), coord, cell)` → B×Q×3."""
        return self.query(self.encode(lr), coord, cell)

    def upscale(self, lr: torch.Tensor, size: tuple[int, int], **options) -> torch.Tensor:
        """`moeisr.models.base.upscale(self, lr, size, **options)`: lr B×3×h×w in [0, 1] → B×3×H×W in [0, 1].

        options: chunk_size, progress, cell_clamp, precision (keywords, documented there).
        """
        return upscale(self, lr, size, **options)


def _tracing_or_counting() -> bool:
    """A jit trace is recording (fvcore) or a Python dispatch mode is active (e.g. torch's FlopCounterMode)."""
    if torch.jit.is_tracing():
        return True
    try:
        from torch.utils._python_dispatch import _get_current_dispatch_mode
    except ImportError:  # private helper; without it only jit traces are detected
        return False
    return _get_current_dispatch_mode() is not None


class InferenceCache:
    """Per-image inference state of the "as executed" path, kept in the features dict ("inference_cache").

    `memo(key, compute)` caches a value per key (e.g. the per-LR-pixel projection of an MLP's first layer, or
    its layers' bf16 weights);
    `buffer(name, rows, width, like)` hands out a reusable rows×width activation buffer. Reusing buffers
    across chunks matters on CPU: a fresh multi-MB tensor is mmapped and page-faulted on every chunk
    (about 60 ms per 128 MB here, see docs/speed.md). Buffers are only handed out with gradients off and
    outside a jit trace (None otherwise: callers then allocate as usual).
    """

    def __init__(self):
        self._memo: dict = {}
        self._buffers: dict = {}

    def memo(self, key, compute: Callable[[], T]) -> T:
        """compute() the first time `key` is asked for, the cached value afterwards."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @property
    def active(self) -> bool:
        """Whether `buffer` hands out buffers now (gradients off, no jit trace)."""
        return not (torch.is_grad_enabled() or torch.jit.is_tracing())

    def buffer(self, name: str, rows: int, width: int, like: torch.Tensor) -> torch.Tensor | None:
        """A rows×width view of the reusable buffer `name` (grown on demand), or None when not `active`."""
        if not self.active:
            return None
        key = (name, width, like.dtype, like.device)
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < rows:
            buf = like.new_empty(rows, width)
            self._buffers[key] = buf
        return buf[:rows]


def inference_cache(features: Mapping[str, torch.Tensor]) -> InferenceCache:
    """The features' InferenceCache (created on first use; a fresh one when `features` is not a dict)."""
    if isinstance(features, dict):
        return features.setdefault("inference_cache", InferenceCache())
    return InferenceCache()


@contextmanager
def using_decoder_path(model: nn.Module, path: str) -> Iterator[nn.Module]:
    """Temporarily set `decoder_path` on every ImplicitSR in `model` (restored on exit); yields `model`.

    E.g. `with using_decoder_path(model, "as_executed"): moeisr.flops.count(model, ...)` counts the executed path.
    """
    if path not in DECODER_PATHS:
        raise UserError(f"decoder_path {path!r} is not one of {DECODER_PATHS}")
    saved = [(m, m.__dict__.get("_decoder_path")) for m in model.modules() if isinstance(m, ImplicitSR)]
    for module, _ in saved:
        module.__dict__["_decoder_path"] = path
    try:
        yield model
    finally:
        for module, old in saved:
            if old is None:
                module.__dict__.pop("_decoder_path", None)
            else:
                module.__dict__["_decoder_path"] = old


def prepare_for_inference(model: nn.Module) -> nn.Module:
    """Put `model` in eval mode with channels-last encoder activations, in place; returns it.

    oneDNN's convolutions on CPU run faster in the channels-last layout (the EDSR-baseline encoder 1.2-1.8×
    here, docs/speed.md). Only the input of the encoder is converted, at inference (`channels_last` of every
    ImplicitSR inside); the layout then propagates through the convolutions (encoder, LTE's coef/freq,
    MoEISR's mapper, LIIF's projection). The parameters keep their values and layout, so the state dict is
    byte-for-byte unchanged (checkpoints written from the model, training started from it); the outputs
    change only by float rounding (≈2e-6) — except MoEISR's where a pixel's routing logits sit on a tie: the
    rounding can flip its expert (`load_model` therefore leaves MoEISR models unprepared). Modules that are
    not ImplicitSR get channels-last weights instead.
    """
    model.eval()
    implicit = [m for m in model.modules() if isinstance(m, ImplicitSR)]
    if not implicit:
        return model.to(memory_format=torch.channels_last)
    for module in implicit:
        module.channels_last = True
    return model


def receptive_radius(encoder: nn.Module) -> int | None:
    """How far (in pixels) an input pixel can influence the encoder's output: `encoder.receptive_radius`,
    or None when the encoder does not declare it (it is then never tiled)."""
    radius = getattr(encoder, "receptive_radius", None)
    return None if radius is None else int(radius)


def conv_chain_radius(module: nn.Module) -> int:
    """Σ over the Conv2d layers of `module` of their half-extent dilation·(k-1)/2: an upper bound of the
    receptive radius of a network of convolutions, pointwise operations, sums and concatenations in which
    every convolution runs once per forward (EDSR, RDN)."""
    total = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            total += max(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size, strict=True))
    return total


def tile_spans(n: int, tile: int, radius: int) -> list[tuple[int, int]]:
    """Cores [start, stop) covering range(n) such that each core plus `radius` pixels of context on its inner
    sides spans at most about `tile` pixels (all tiles equally long, ±1): one core when n ≤ tile."""
    if n <= tile:
        return [(0, n)]
    inner = max(tile - 2 * radius, 1)  # an interior core, with context on both sides, fills one tile
    parts = max(2, math.ceil((n - 2 * radius) / inner))
    step = (n - 2 * radius) / parts  # edge cores are `radius` longer: their outer side needs no context
    bounds = [0, *(round(radius + i * step) for i in range(1, parts)), n]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def encode_tiled(encoder: nn.Module, inp: torch.Tensor, tile_size: int | None) -> torch.Tensor:
    """encoder(inp) computed on overlapping tiles: inp B×3×h×w → B×C×h×w.

    When h·w > tile_size², each axis longer than tile_size is cut into cores (`tile_spans`); a core is encoded
    with r = `receptive_radius(encoder)` extra pixels of context on its inner sides (at the image border the
    encoder's own zero padding is the right one), so tiles span at most ~tile_size pixels, and only the core
    is kept. Every core pixel then sees exactly the inputs it sees in the untiled forward, so the result
    equals it up to float rounding (other convolution blockings). Peak memory: one tile's activations plus
    the output. Any device; the output has the first tile's memory format. Untiled (plain `encoder(inp)`)
    when `tile_size` is None, h·w ≤ tile_size², or the encoder declares no receptive radius. Tiles should be
    well above 2r: the recomputed context costs (tile / (tile − 2r))² per interior tile.
    """
    B, _, h, w = inp.shape
    radius = receptive_radius(encoder)
    if tile_size is None or h * w <= tile_size * tile_size or radius is None:
        return encoder(inp)
    out = None
    for r0, r1 in tile_spans(h, tile_size, radius):
        for c0, c1 in tile_spans(w, tile_size, radius):
            a0, a1 = max(r0 - radius, 0), min(r1 + radius, h)
            b0, b1 = max(c0 - radius, 0), min(c1 + radius, w)
            tile = encoder(inp[:, :, a0:a1, b0:b1])
            if out is None:
                layout = torch.channels_last if _is_channels_last(tile) else torch.contiguous_format
                out = torch.empty(B, tile.shape[1], h, w, dtype=tile.dtype, device=tile.device, memory_format=layout)
            out[:, :, r0:r1, c0:c1] = tile[:, :, r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]
            del tile  # free this tile's features before the next tile's forward
    return out


def _is_channels_last(t: torch.Tensor) -> bool:
    return t.dim() == 4 and t.shape[1] > 1 and t.is_contiguous(memory_format=torch.channels_last)


def parse_scale(value: float | str) -> float:
    """An upscaling factor (a number or its text, e.g. '3.7') → a finite float >= 1; UserError otherwise."""
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise UserError(f"scale {value!r} is not a number; pass e.g. --scale 2 or --scale 3.7") from None
    if not math.isfinite(scale) or scale < 1:
        raise UserError(f"scale {value} is not supported: it must be a finite number >= 1 (e.g. 2, 3.7, 12)")
    return scale


def output_size(lr_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """(round(h·s), round(w·s)) for a finite scale s ≥ 1 (see `parse_scale`); UserError otherwise."""
    scale = parse_scale(scale)
    return round(lr_hw[0] * scale), round(lr_hw[1] * scale)


def _check_size(size) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise ValueError(f"output size must be two positive integers (H, W), got {size!r}")
    return int(size[0]), int(size[1])


def cell_scale_factors(lr_hw: tuple[int, int], size: tuple[int, int], cell_clamp: float | None) -> tuple[float, float]:
    """Per-axis factors applied to the true cell (2/H, 2/W).

    `cell_clamp=None` keeps the true cell (LIIF). A float s_max enlarges the cell of any axis whose scale
    H/h exceeds s_max to the cell of scale s_max, as LTE's test code does (`cell * max(scale / s_max, 1)`),
    which keeps the cell input inside the training range for out-of-distribution scales.
    """
    if cell_clamp is None:
        return 1.0, 1.0
    if not math.isfinite(cell_clamp) or cell_clamp <= 0:
        raise ValueError(f"cell_clamp must be a positive finite scale, got {cell_clamp!r}")
    return tuple(max(out / inp / cell_clamp, 1.0) for out, inp in zip(size, lr_hw, strict=True))


def upscale(
    model: ImplicitSR,
    lr: torch.Tensor,
    size: tuple[int, int],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = False,
    cell_clamp: float | None = None,
    precision: str = "fp32",
) -> torch.Tensor:
    """Super-resolve `lr` (B×3×h×w in [0, 1]) to `size` = (H, W): returns B×3×H×W clamped to [0, 1].

    Encodes once, then decodes the H·W output pixels (in raster order) in chunks of `chunk_size`,
    generating each chunk's coordinates and cells on the fly and writing into a preallocated output,
    under `torch.inference_mode`. The result does not depend on `chunk_size` beyond float rounding.
    `cell_clamp`: None uses the true cell; a float s_max (e.g. 4, the training maximum) clamps the cell
    to that of scale s_max (see `cell_scale_factors`). `progress` shows a tqdm bar on stderr. The model's
    train/eval mode is left as it is (load_model returns models in eval mode). Peak memory is the encoder's
    peak (bounded by tiling above `encode_tile_size`² LR pixels), then features + output + one chunk (about
    1 GB at the default chunk size for LIIF/LTE); docs/speed.md §6 has full-size measurements.
    With `decoder_path` "auto" (default) the decoders take their "as executed" path here (module docstring).
    `precision`: "fp32" (default) or "bf16", the decoder MLPs' GEMMs after their first layer in bfloat16
    (module docstring; not exact, opt-in).
    """
    if precision not in PRECISIONS:
        raise UserError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if lr.dim() != 4 or lr.shape[1] != 3:
        raise ValueError(f"lr must be B×3×h×w, got shape {tuple(lr.shape)}")
    H, W = _check_size(size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    fh, fw = cell_scale_factors(tuple(lr.shape[-2:]), (H, W), cell_clamp)
    token = _IN_UPSCALE.set(True)
    dtype_token = _HIDDEN_DTYPE.set(PRECISIONS[precision])
    try:
        return _upscale_chunks(model, lr, (H, W), chunk_size, progress, (fh, fw))
    finally:
        _HIDDEN_DTYPE.reset(dtype_token)
        _IN_UPSCALE.reset(token)


def _upscale_chunks(model, lr, size, chunk_size, progress, cell_factors) -> torch.Tensor:
    B = lr.shape[0]
    H, W = size
    fh, fw = cell_factors
    device = lr.device
    with torch.inference_mode():
        features = model.encode(lr)
        out = torch.empty(B, 3, H * W, dtype=lr.dtype, device=device)
        rows = make_coord((H,), device=device, dtype=lr.dtype)[:, 0]
        cols = make_coord((W,), device=device, dtype=lr.dtype)[:, 0]
        # the cell is constant over the grid: same float32 values as make_cell times the clamp factor
        cell_value = torch.tensor([2.0 / H, 2.0 / W], dtype=lr.dtype, device=device)
        cell_value = cell_value * torch.tensor([fh, fw], dtype=lr.dtype, device=device)
        total = H * W
        with tqdm(total=total, disable=not progress, unit="px", unit_scale=True, desc="upscale") as bar:
            for start in range(0, total, chunk_size):
                stop = min(start + chunk_size, total)
                index = torch.arange(start, stop, device=device)
                coord = torch.stack((rows[index // W], cols[index % W]), dim=-1)
                coord = coord.unsqueeze(0).expand(B, -1, -1)
                cell = cell_value.expand(B, stop - start, 2)
                pred = model.query(features, coord, cell)
                out[:, :, start:stop] = pred.clamp(0, 1).transpose(1, 2)
                bar.update(stop - start)
    return out.view(B, 3, H, W)
