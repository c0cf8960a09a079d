"""`moeisr sr [CKPT] IN.png (--scale S | --size WxH) -o OUT.png`: super-resolve one image."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

import torch

from moeisr.errors import UserError
from moeisr.models.base import PRECISIONS

DEFAULT_CHECKPOINT_DIR = Path("results/checkpoints")
# The default output budget of `moeisr sr` and `moeisr flops`: 64 MP (e.g. 8000x8000). A larger request is
# almost always a typo in --scale/--size, and would run for hours or exhaust memory; --force allows it.
MAX_OUTPUT_PIXELS = 64_000_000
MIN_INPUT_SIDE = 2  # a single row or column of pixels has nothing to interpolate across
# The bundled cpu-profile checkpoints, best first (written by `moeisr reproduce`).
DEFAULT_NAMES = ("moeisr_liif.pt", "liif.pt", "default.pth")
BICUBIC = "bicubic"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sr",
        help="super-resolve one image at any scale",
        description=(
            "Super-resolve IN to OUT with a checkpoint (ours or an official LIIF/LTE .pth) or with 'bicubic'. "
            f"Without CKPT, the default checkpoint in {DEFAULT_CHECKPOINT_DIR}/ is used."
        ),
    )
    parser.add_argument("ckpt", nargs="?", metavar="CKPT", help="checkpoint .pth, or 'bicubic'")
    parser.add_argument("input", metavar="IN", help="input image (any format Pillow reads)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--scale", type=float, help="upscaling factor >= 1; output is (round(h*s), round(w*s))")
    target.add_argument("--size", help="output size as WxH, e.g. 1920x1080")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output image (.png or .webp, lossless)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default: cpu)")
    add_budget_arguments(parser)
    parser.add_argument("--chunk-size", type=int, default=None, help="output pixels decoded at once (memory knob)")
    parser.add_argument(
        "--encode-tile-size",
        default=None,
        metavar="N|none",
        help="encode LR inputs larger than N×N in overlapping tiles (memory knob; same output up to float rounding); "
        "'none' encodes whole (default: the model's, 660)",
    )
    parser.add_argument(
        "--cell-clamp",
        type=float,
        default=None,
        metavar="S",
        help="decode scales above S with the cell of scale S (LTE's out-of-distribution rule); default: true cell",
    )
    parser.add_argument(
        "--precision",
        choices=tuple(PRECISIONS),
        default="fp32",
        help="bf16: the decoder's GEMMs after its first layer in bfloat16, 1.7-2.1x faster here (CPUs with "
        "bf16 units), PSNR within 0.002 dB but not bit-exact (docs/speed.md); default: fp32",
    )
    parser.add_argument(
        "--routing-knob",
        type=float,
        default=None,
        metavar="V",
        help="MoEISR only: > 0 favours cheaper experts, < 0 deeper; inf = all cheapest, =-inf all deepest",
    )
    parser.add_argument(
        "--expert-map",
        metavar="MAP",
        default=None,
        help="MoEISR only: also write the per-pixel expert map (.png; yellow/green/blue/red = cheapest..deepest)",
    )
    parser.set_defaults(func=run)


def add_budget_arguments(parser) -> None:
    """--max-pixels and --force: the output pixel budget shared by `moeisr sr` and `moeisr flops`."""
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_OUTPUT_PIXELS,
        metavar="N",
        help=f"refuse outputs of more than N pixels unless --force (default: {MAX_OUTPUT_PIXELS:,})",
    )
    parser.add_argument("--force", action="store_true", help="allow an output larger than --max-pixels")


def check_request(source: str, lr_hw: tuple[int, int], out_hw: tuple[int, int], max_pixels: int, force: bool) -> None:
    """UserError unless an LR of `lr_hw` (from `source`) is at least 2x2 and `out_hw` fits the pixel budget."""
    (h, w), (out_h, out_w) = lr_hw, out_hw
    if min(h, w) < MIN_INPUT_SIDE:
        raise UserError(
            f"{source} is {w}x{h} pixels; super-resolution needs at least {MIN_INPUT_SIDE}x{MIN_INPUT_SIDE} "
            "(a single pixel row or column has nothing to interpolate); use a larger image"
        )
    if max_pixels < 1:
        raise UserError(f"--max-pixels must be a positive integer, got {max_pixels}")
    pixels = out_h * out_w
    if pixels > max_pixels and not force:
        raise UserError(
            f"the output {out_w}x{out_h} has {pixels:,} pixels, over the budget of {max_pixels:,} "
            "(--max-pixels); lower --scale/--size, or pass --force if you really want it"
        )


def default_checkpoint(directory: Path | None = None) -> Path | None:
    """The bundled checkpoint (DEFAULT_NAMES, in order) under ./results/checkpoints or the checkout's, or None."""
    from moeisr.data.roots import repo_root

    directories = (
        [directory] if directory is not None else [DEFAULT_CHECKPOINT_DIR, repo_root() / DEFAULT_CHECKPOINT_DIR]
    )
    for folder in directories:
        for name in DEFAULT_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' → (H, W)."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise UserError(f"--size {text!r} is not WxH with positive integers, e.g. --size 1920x1080")
    return int(match[2]), int(match[1])


def _resolve_checkpoint(ckpt: str | None) -> str:
    if ckpt is not None:
        return ckpt
    found = default_checkpoint()
    if found is None:
        raise UserError(
            f"no default checkpoint is available yet (none in {DEFAULT_CHECKPOINT_DIR}/); "
            "pass one: moeisr sr CKPT IN.png --scale 4 -o OUT.png (an official LIIF/LTE .pth, ours, or 'bicubic')"
        )
    return str(found)


def run(args: argparse.Namespace) -> int:
    from moeisr.data.degrade import upscale_bicubic
    from moeisr.data.images import load_image, save_image
    from moeisr.io import check_writable
    from moeisr.models.base import DEFAULT_CHUNK_SIZE, output_size
    from moeisr.models.checkpoint import load_model

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA device is available; use --device cpu")
    chunk_size = DEFAULT_CHUNK_SIZE if args.chunk_size is None else args.chunk_size
    if chunk_size < 1:
        raise UserError(f"--chunk-size must be a positive integer, got {args.chunk_size}")
    if Path(args.output).suffix.lower() not in (".png", ".webp"):
        raise UserError(f"output {args.output} must end in .png or .webp (lossless formats)")
    ckpt = _resolve_checkpoint(args.ckpt)
    lr = load_image(Path(args.input)).unsqueeze(0).to(args.device)
    h, w = lr.shape[-2:]
    size = output_size((h, w), args.scale) if args.scale is not None else parse_size(args.size)
    if size[0] < h or size[1] < w:
        raise UserError(f"output size {size[1]}x{size[0]} is smaller than the input {w}x{h}; moeisr sr only upscales")
    check_request(f"input {args.input}", (h, w), size, args.max_pixels, args.force)
    tile_size = parse_tile_size(args.encode_tile_size)
    if args.cell_clamp is not None and not args.cell_clamp >= 1:
        raise UserError(f"--cell-clamp must be a scale >= 1, got {args.cell_clamp}")
    for option in ("expert_map", "routing_knob"):
        if getattr(args, option) is not None and (ckpt == BICUBIC or not _is_moe_checkpoint(ckpt)):
            raise UserError(f"--{option.replace('_', '-')} needs a MoEISR checkpoint; {ckpt} is not one")
    if args.precision != "fp32" and ckpt == BICUBIC:
        raise UserError(f"--precision {args.precision} applies to a model's decoder; bicubic has none")
    if args.routing_knob is not None and math.isnan(args.routing_knob):
        raise UserError("--routing-knob is NaN; use a number, inf (all cheapest) or -inf (all deepest)")
    if args.expert_map is not None and Path(args.expert_map).suffix.lower() not in (".png", ".webp"):
        raise UserError(f"expert map {args.expert_map} must end in .png or .webp")
    for target in (args.output, args.expert_map):
        if target is not None:
            check_writable(target)  # fail now rather than after a long decode
    if ckpt == BICUBIC:
        sr = upscale_bicubic(lr, size)
    else:
        model = load_model(ckpt, map_location=args.device)
        if tile_size is not None:
            model.encode_tile_size = tile_size or None
        large = size[0] * size[1] > 4 * chunk_size
        knob = {} if args.routing_knob is None else {"routing_knob": args.routing_knob}
        sr = model.upscale(
            lr,
            size,
            chunk_size=chunk_size,
            progress=large,
            cell_clamp=args.cell_clamp,
            precision=args.precision,
            **knob,
        )
    save_image(sr.cpu(), Path(args.output))
    if args.expert_map is not None:
        write_expert_map(model, lr, size, Path(args.expert_map), chunk_size, args.cell_clamp, args.routing_knob)
    return 0


def parse_tile_size(text: str | None) -> int | None:
    """--encode-tile-size: None (the model's default), 0 for 'none' (never tile), or a side >= 16 LR pixels."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return 0
    try:
        side = int(text)
    except ValueError:
        side = -1
    if side < 16:
        raise UserError(f"--encode-tile-size must be an integer >= 16 (LR pixels) or 'none', got {text!r}")
    return side


def _is_moe_checkpoint(path: str) -> bool:
    import moeisr.models  # noqa: F401  (registers the model names)
    from moeisr.models.base import compute_knob
    from moeisr.models.checkpoint import read_checkpoint
    from moeisr.registry import models

    try:
        return compute_knob(models.get(read_checkpoint(path)["model"]["name"])) == "routing_knob"
    except KeyError:
        return False


def write_expert_map(model, lr, size, path: Path, chunk_size, cell_clamp, knob) -> None:
    """Save the coloured expert map of `model` on `lr` at `size` and print each expert's share of pixels."""
    from moeisr.data.images import save_image
    from moeisr.models.moe.colors import COLOR_NAMES, colorize_expert_map

    experts = model.expert_map(lr, size, chunk_size=chunk_size, cell_clamp=cell_clamp, routing_knob=knob)
    image, shares = colorize_expert_map(experts[0], model.n_experts)
    save_image(image.cpu(), path)
    for j, (share, hidden) in enumerate(zip(shares.tolist(), model.experts.hidden_lists, strict=True)):
        name = COLOR_NAMES[j] if j < len(COLOR_NAMES) else f"colour {j}"
        print(f"expert {j} ({name}, hidden {hidden}): {100 * share:.1f}% of pixels")
