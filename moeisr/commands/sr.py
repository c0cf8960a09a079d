"""`moeisr sr [CKPT] IN (--scale S | --size WxH) -o OUT`: super-resolve one image, or every image of a folder."""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from moeisr.commands.arguments import SIZE_ORDER_HELP, parse_scale_text
from moeisr.commands.arguments import parse_size as parse_size_option
from moeisr.commands.checkpoints import (
    CHECKPOINT_DIR,
    DEFAULT_NAMES,
    SHORT_NAME_HELP,
    available_text,
    resolve_checkpoint,
)
from moeisr.commands.checkpoints import default_checkpoint as _bundled_default
from moeisr.errors import UserError
from moeisr.models.base import PRECISIONS

DEFAULT_CHECKPOINT_DIR = CHECKPOINT_DIR
# The default output budget of `moeisr sr` and `moeisr flops`: 64 MP (e.g. 8000x8000). A larger request is
# almost always a typo in --scale/--size, and would run for hours or exhaust memory; --force allows it.
MAX_OUTPUT_PIXELS = 64_000_000
MIN_INPUT_SIDE = 2  # a single row or column of pixels has nothing to interpolate across
OUTPUT_SUFFIXES = (".png", ".webp")
FOLDER_OUTPUT_SUFFIX = ".png"
BICUBIC = "bicubic"
# Where `--precision bf16` was measured (docs/speed.md, §2): faster on one machine, slower on another.
BF16_MEASURED = "1.7-2.1x faster with the bundled LIIF and MoEISR-LIIF on a 2-core AMD EPYC"
BF16_SLOWER = "1.6x slower on a 2-core Intel Xeon that has AVX512_BF16"
BF16_UNIT_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bf16 dot-product units


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sr",
        help="super-resolve an image (or every image of a folder) at any scale",
        description=(
            "Super-resolve IN to OUT with a checkpoint (ours or an official LIIF/LTE .pth) or with 'bicubic'. "
            f"Without CKPT, the first of {', '.join(DEFAULT_NAMES[:2])} in {CHECKPOINT_DIR}/ of the checkout that "
            "holds the moeisr package is used (its path is printed on stderr). On success one line says what was "
            "written: output path and size, time, and for MoEISR the decoder cost relative to all-deepest routing "
            "and each expert's share of the pixels. Sizes are width x height everywhere."
        ),
    )
    parser.add_argument(
        "ckpt",
        nargs="?",
        metavar="CKPT",
        help=f"checkpoint .pt/.pth (ours, or an official LIIF/LTE one), 'bicubic', or {SHORT_NAME_HELP}",
    )
    parser.add_argument(
        "input",
        metavar="IN",
        help="input image (any format Pillow reads), or a folder: every image in it is upscaled (progress bar)",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--scale",
        metavar="S",
        help="upscaling factor >= 1, e.g. 4, 3.7, x4 or 4x; output is round(w*s) x round(h*s)",
    )
    target.add_argument("--size", metavar="WxH", help=f"output size, {SIZE_ORDER_HELP}, e.g. 1920x1080")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output image (.png or .webp, lossless); for a folder IN, the output folder (created if needed; "
        "one .png per input, named after it)",
    )
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
        help="bf16: the decoder's GEMMs after its first layer in bfloat16; not bit-exact (PSNR within 0.002 dB "
        f"with the bundled checkpoints). Not a general speed-up: {BF16_MEASURED}, {BF16_SLOWER} (docs/speed.md); "
        "likely slower on CPUs without bf16 units (AVX512_BF16 or AMX; AVX2-only CPUs have none, and a warning "
        "says so there). Time both on your machine. Default: fp32",
    )
    routing = parser.add_mutually_exclusive_group()
    routing.add_argument(
        "--routing-knob",
        type=float,
        default=None,
        metavar="V",
        help="MoEISR only: > 0 favours cheaper experts, < 0 deeper; inf = all cheapest, =-inf all deepest",
    )
    routing.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="P",
        help="MoEISR only: the decoder may cost at most P percent of its all-deepest routing on each image "
        "(the smallest routing knob that fits, found per image); P from the cheapest expert's share to 100",
    )
    parser.add_argument(
        "--expert-map",
        metavar="MAP",
        default=None,
        help="MoEISR only, one image: also write the per-pixel expert map (.png; yellow/green/blue/red = "
        "cheapest..deepest)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
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
    """The bundled default checkpoint (DEFAULT_NAMES, in order) in `directory`, by default results/checkpoints
    of the checkout holding the moeisr package (`moeisr.commands.checkpoints`); None if there is none."""
    return _bundled_default(directory)


def parse_size(text: str) -> tuple[int, int]:
    """--size 'WxH' → (H, W)."""
    return parse_size_option("--size", text)


def _resolve_checkpoint(ckpt: str | None) -> str:
    if ckpt is not None:
        return ckpt if ckpt == BICUBIC else str(resolve_checkpoint(ckpt))
    found = default_checkpoint()
    if found is None:
        raise UserError(
            f"no default checkpoint is available yet (none of {', '.join(DEFAULT_NAMES)} in {CHECKPOINT_DIR}/); "
            "pass one: moeisr sr CKPT IN.png --scale 4 -o OUT.png (an official LIIF/LTE .pth, ours, or 'bicubic'); "
            + available_text()
        )
    print(f"moeisr sr: no CKPT given; using the default checkpoint {found}", file=sys.stderr)
    return str(found)


def cpu_bf16_units() -> bool | None:
    """Whether this CPU has bf16 dot-product units (AVX512_BF16 or AMX): False when torch's CPU capability
    (`torch.backends.cpu.get_cpu_capability()`) is below AVX512 on x86 (AVX2-only CPUs have none) or when
    /proc/cpuinfo lists AVX512 without a bf16 flag; True when a bf16 flag is listed; None when unknown."""
    capability = torch.backends.cpu.get_cpu_capability().upper()
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686", "x86")
    if x86 and capability in ("DEFAULT", "NO AVX", "AVX", "AVX2"):
        return False
    flags = _cpu_flags()
    if flags is None:
        return None
    if any(flag in flags for flag in BF16_UNIT_FLAGS):
        return True
    return False if x86 else None


def _cpu_flags() -> set[str] | None:
    """The CPU flags of /proc/cpuinfo (Linux), or None where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def warn_if_bf16_is_slow() -> None:
    """A warning (printed `moeisr sr: warning: ...`) where the CPU has no bf16 units."""
    if cpu_bf16_units() is False:
        capability = torch.backends.cpu.get_cpu_capability()
        warnings.warn(
            f"--precision bf16: this CPU has no bf16 units (torch reports {capability}; bf16 units come with "
            f"AVX512_BF16 or AMX), so bf16 will likely be slower than fp32 here; the speed-up in docs/speed.md "
            f"({BF16_MEASURED}) was measured on an AMD EPYC, not on a CPU like this one",
            stacklevel=2,
        )


@dataclass
class Result:
    """What one upscale did, for the summary line."""

    source: Path
    output: Path
    lr_hw: tuple[int, int]
    size: tuple[int, int]
    seconds: float
    counts: torch.Tensor | None = None  # pixels per expert (MoEISR)
    knob: float | None = None


@contextlib.contextmanager
def recording_routing(model):
    """Within the block, count the pixels `model` (a MoEISR) routes to each expert: yields a (J,) int64 tensor
    updated in place by every routing decision of `upscale` (the decisions that ran, not a second pass)."""
    counts = torch.zeros(model.n_experts, dtype=torch.int64)
    original = model.router.route

    def route(*args, **kwargs):
        info = original(*args, **kwargs)
        counts.add_(info.counts().cpu())
        return info

    model.router.route = route
    try:
        yield counts
    finally:
        del model.router.route


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from moeisr.data.images import image_size
    from moeisr.io import check_writable
    from moeisr.models.base import DEFAULT_CHUNK_SIZE
    from moeisr.models.checkpoint import load_model

    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA device is available; use --device cpu")
    chunk_size = DEFAULT_CHUNK_SIZE if args.chunk_size is None else args.chunk_size
    if chunk_size < 1:
        raise UserError(f"--chunk-size must be a positive integer, got {args.chunk_size}")
    scale = parse_scale_text(args.scale) if args.scale is not None else None
    size = parse_size(args.size) if args.size is not None else None
    jobs, folder = _jobs(Path(args.input), Path(args.output))
    if folder and args.expert_map is not None:
        raise UserError(f"--expert-map takes one image; {args.input} is a folder (run once per image for its map)")
    ckpt = _resolve_checkpoint(args.ckpt)
    # every input's header first: a folder with one bad or too small image fails before any work
    requests = []
    for source, _ in jobs:
        lr_hw = image_size(source)
        out_hw = _output_size(lr_hw, scale, size, args.size)
        check_request(f"input {source}", lr_hw, out_hw, args.max_pixels, args.force)
        requests.append(out_hw)
    tile_size = parse_tile_size(args.encode_tile_size)
    if args.cell_clamp is not None and not args.cell_clamp >= 1:
        raise UserError(f"--cell-clamp must be a scale >= 1, got {args.cell_clamp}")
    moe = ckpt != BICUBIC and _is_moe_checkpoint(ckpt)
    for option in ("expert_map", "routing_knob", "budget"):
        if getattr(args, option) is not None and not moe:
            raise UserError(f"--{option.replace('_', '-')} needs a MoEISR checkpoint; {ckpt} is not one")
    if args.precision != "fp32" and ckpt == BICUBIC:
        raise UserError(f"--precision {args.precision} applies to a model's decoder; bicubic has none")
    if args.routing_knob is not None and math.isnan(args.routing_knob):
        raise UserError("--routing-knob is NaN; use a number, inf (all cheapest) or -inf (all deepest)")
    if args.budget is not None and not 0 < args.budget <= 100:
        raise UserError(f"--budget is a percentage of the all-deepest decoder cost in (0, 100], got {args.budget}")
    if args.expert_map is not None and Path(args.expert_map).suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(f"expert map {args.expert_map} must end in .png or .webp")
    for target in (jobs[0][1], args.expert_map):
        if target is not None:
            check_writable(target)  # fail now rather than after a long decode
    if args.precision == "bf16":
        warn_if_bf16_is_slow()
    model = None if ckpt == BICUBIC else load_model(ckpt, map_location=args.device)
    if model is not None and tile_size is not None:
        model.encode_tile_size = tile_size or None
    if args.budget is not None:
        _check_budget(model, args.budget)
    results = []
    bar = tqdm(jobs, desc="sr", unit="image", disable=not folder or args.no_progress, file=sys.stderr)
    for (source, output), out_hw in zip(bar, requests, strict=True):
        results.append(_upscale_one(model, source, output, out_hw, args, chunk_size, progress=not folder))
    bar.close()
    if args.expert_map is not None:
        result = results[0]
        lr = _load(result.source, args.device)
        write_expert_map(model, lr, result.size, Path(args.expert_map), chunk_size, args.cell_clamp, result.knob)
    print(summary_line(results, Path(args.output) if folder else None, ckpt, model, args))
    return 0


def _jobs(source: Path, output: Path) -> tuple[list[tuple[Path, Path]], bool]:
    """[(input image, output image)] and whether `source` is a folder (then `output` is one too)."""
    from moeisr.data.layout import image_extensions, image_files

    if not source.is_dir():
        if output.suffix.lower() not in OUTPUT_SUFFIXES:
            raise UserError(f"output {output} must end in .png or .webp (lossless formats)")
        return [(source, output)], False
    if output.suffix.lower() in OUTPUT_SUFFIXES or output.is_file():
        raise UserError(f"{source} is a folder, so -o must name a folder too (got {output}); e.g. -o {source.name}_sr")
    if output.resolve() == source.resolve():
        raise UserError(f"-o {output} is the input folder; choose another folder so that no input is overwritten")
    images = image_files(source)
    if not images:
        examples = ", ".join(sorted(e for e in image_extensions() if e in (".png", ".webp", ".jpg", ".bmp", ".tif")))
        raise UserError(f"{source} holds no image files (any format Pillow reads: {examples}, ...)")
    outputs = [output / f"{image.stem}{FOLDER_OUTPUT_SUFFIX}" for image in images]
    seen: dict[Path, Path] = {}
    for image, target in zip(images, outputs, strict=True):
        if target in seen:
            raise UserError(f"{seen[target].name} and {image.name} would both be written to {target}; rename one")
        seen[target] = image
    return list(zip(images, outputs, strict=True)), True


def _output_size(lr_hw, scale, size, size_text) -> tuple[int, int]:
    """The output (H, W) of an LR of lr_hw (h, w) for --scale or --size; UserError if it downscales."""
    from moeisr.models.base import output_size

    h, w = lr_hw
    out = output_size(lr_hw, scale) if scale is not None else size
    if out[0] < h or out[1] < w:
        raise UserError(f"output size {out[1]}x{out[0]} is smaller than the input {w}x{h}; moeisr sr only upscales")
    if size is not None:
        _warn_if_transposed(size_text, lr_hw, size)
    return out


def _warn_if_transposed(text: str, lr_hw, size) -> None:
    """--size is width x height: a warning when it stretches the image and the swapped order would not."""
    (h, w), (H, W) = lr_hw, size
    as_given = abs(math.log((W / w) / (H / h)))
    swapped = abs(math.log((H / w) / (W / h)))
    if as_given > 0.05 and swapped < 0.01:
        warnings.warn(
            f"--size {text} is width x height: it stretches the {w}x{h} input by x{W / w:.3g} horizontally and "
            f"x{H / h:.3g} vertically; for its aspect ratio write --size {H}x{W}",
            stacklevel=2,
        )


def _load(path: Path, device: str) -> torch.Tensor:
    from moeisr.data.images import load_image

    return load_image(path).unsqueeze(0).to(device)


def _check_budget(model, budget: float) -> None:
    cheapest = float(model.experts.relative_costs().min())
    if budget / 100 < cheapest:
        raise UserError(
            f"--budget {budget:g}% is below the cheapest expert's cost, {100 * cheapest:.1f}% of the all-deepest "
            f"decoder; use a value from {math.ceil(1000 * cheapest) / 10:g} to 100"
        )


def _upscale_one(model, source: Path, output: Path, size, args, chunk_size: int, progress: bool) -> Result:
    from moeisr.data.degrade import upscale_bicubic
    from moeisr.data.images import save_image
    from moeisr.models.moe.moeisr import MoEISR

    lr = _load(source, args.device)
    lr_hw = tuple(lr.shape[-2:])
    start = time.perf_counter()
    if model is None:
        sr = upscale_bicubic(lr, size)
        result = Result(source, output, lr_hw, size, 0.0)
    else:
        knob = args.routing_knob
        if args.budget is not None:
            knob = model.knob_for_budget(lr, size, args.budget / 100, chunk_size=chunk_size, cell_clamp=args.cell_clamp)
        options = {"chunk_size": chunk_size, "cell_clamp": args.cell_clamp, "precision": args.precision}
        large = size[0] * size[1] > 4 * chunk_size
        progress = progress and large and not args.no_progress
        if isinstance(model, MoEISR):
            with recording_routing(model) as counts:
                sr = model.upscale(lr, size, progress=progress, routing_knob=knob, **options)
            result = Result(source, output, lr_hw, size, 0.0, counts=counts, knob=knob)
        else:
            sr = model.upscale(lr, size, progress=progress, **options)
            result = Result(source, output, lr_hw, size, 0.0)
    result.seconds = time.perf_counter() - start
    save_image(sr.cpu(), output)
    return result


def summary_line(results: list[Result], folder: Path | None, ckpt: str, model, args) -> str:
    """One line: what was written (path, W x H size), how long the upscaling took, with what; for MoEISR the
    decoder cost relative to all-deepest routing and the expert shares, over every pixel written."""
    seconds = sum(r.seconds for r in results)
    with_what = BICUBIC if ckpt == BICUBIC else Path(ckpt).name
    if folder is None:
        (r,) = results
        how = f"x{parse_scale_text(args.scale):g} from" if args.scale is not None else "from"
        what = f"wrote {r.output}: {r.size[1]}x{r.size[0]} (WxH, {how} {r.lr_hw[1]}x{r.lr_hw[0]})"
    else:
        megapixels = sum(r.size[0] * r.size[1] for r in results) / 1e6
        what = f"wrote {len(results)} image{'s' * (len(results) != 1)} to {folder}/ ({megapixels:.2f} MP in all)"
    line = f"{what} in {seconds:.2f} s with {with_what}"
    if args.precision != "fp32":
        line += f" ({args.precision})"
    counts = [r.counts for r in results if r.counts is not None]
    if counts:
        total = torch.stack(counts).sum(dim=0).to(torch.float64)
        shares = total / total.sum().clamp_min(1)
        cost = float((shares * model.experts.relative_costs()).sum())
        line += f"; decoder cost {100 * cost:.1f}% of all-deepest, expert shares "
        line += " / ".join(f"{100 * s:.1f}%" for s in shares.tolist()) + " (cheapest..deepest)"
        if args.budget is not None:
            knobs = [r.knob for r in results]
            knob_text = f"{knobs[0]:.4g}" if len(knobs) == 1 else f"{min(knobs):.4g}..{max(knobs):.4g}"
            line += f"; --budget {args.budget:g}%: routing knob {knob_text}"
        elif args.routing_knob is not None:
            line += f"; routing knob {args.routing_knob:g}"
    return line


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
