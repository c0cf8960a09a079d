"""`moeisr eval (CKPT|NAME=CKPT|bicubic)... --sets ... --scales ... --out results.csv`."""

from __future__ import annotations

from pathlib import Path

from moeisr.commands.arguments import scale_list, set_list
from moeisr.commands.checkpoints import SHORT_NAME_HELP, resolve_checkpoint
from moeisr.data.layout import BENCHMARK_SETS, canonical_set_name
from moeisr.errors import UserError
from moeisr.flops.source import parse_knob


def csv_path(text: str) -> Path:
    """--out: a .csv path; UserError for any other extension (eval writes CSV only)."""
    path = Path(text)
    if path.suffix.lower() != ".csv":
        got = f"a {path.suffix} file" if path.suffix else "no extension"
        raise UserError(f"--out {text}: moeisr eval writes CSV only, and this is {got}; use e.g. --out results.csv")
    return path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate checkpoints (or bicubic) on benchmark sets, with a resumable cache",
        description="Evaluate models on a grid of sets and scales. Rows already in the cache are not recomputed.",
    )
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL",
        help=f"'bicubic', a checkpoint (.pt/.pth, ours or an official LIIF/LTE one), {SHORT_NAME_HELP}, or "
        "NAME=CHECKPOINT to name its rows",
    )
    parser.add_argument(
        "--sets",
        type=set_list,
        default=list(BENCHMARK_SETS),
        metavar="SET,SET",
        help=f"benchmark sets, comma-separated, any case (set5 is Set5) (default: {','.join(BENCHMARK_SETS)})",
    )
    parser.add_argument(
        "--scales",
        type=scale_list("--scales", "2,3,4"),
        default=[2.0, 3.0, 4.0],
        metavar="S,S",
        help="upscaling factors, comma-separated, each >= 1 (2, 3.7, x4 or 4x) (default: 2,3,4)",
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="[SET=]N",
        help="evaluate the first N images of every set (or of SET); repeatable",
    )
    parser.add_argument(
        "--routing-knob",
        dest="knobs",
        type=parse_knob,
        action="append",
        default=None,
        metavar="V",
        help="MoEISR routing knob (repeatable; default: plain argmax routing)",
    )
    parser.add_argument(
        "--out",
        type=csv_path,
        required=True,
        metavar="OUT.csv",
        help="CSV of the requested grid, written atomically (must end in .csv)",
    )
    parser.add_argument("--cache", type=Path, default=None, help="results cache (default: OUT with .jsonl suffix)")
    parser.add_argument(
        "--protocol",
        choices=["benchmark", "div2k"],
        default="benchmark",
        help="benchmark: PSNR/SSIM on Y with a scale-pixel border shaved, as the SR papers' benchmark tables; "
        "div2k: on RGB with scale+6 shaved, as LIIF's DIV2K validation (default: benchmark)",
    )
    parser.add_argument("--no-lpips", dest="lpips", action="store_false", help="skip LPIPS")
    parser.add_argument("--no-flops", dest="flops", action="store_false", help="skip FLOPs counting")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--data-root", type=Path, default=None, help="data folder (default: $MOEISR_DATA, else ../shared/data)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from moeisr.evaluate.cache import ResultsCache
    from moeisr.evaluate.runner import (
        Grid,
        bicubic_entry,
        checkpoint_entry,
        evaluate,
        parse_limits,
    )
    from moeisr.io import atomic_write_text, check_writable

    entries = []
    for spec in args.models:
        if spec == "bicubic":
            entries.append(bicubic_entry())
            continue
        name, _, path = spec.rpartition("=")
        entries.append(checkpoint_entry(resolve_checkpoint(path), name or None, device=args.device))
    try:
        limits = parse_limits([_canonical_limit(value) for value in args.limit], args.sets)
    except ValueError:
        raise UserError(f"--limit: use N or SET=N, got {args.limit}") from None
    grid = Grid(sets=args.sets, scales=args.scales, knobs=args.knobs or [None], limit=limits, protocol=args.protocol)
    cache_path = args.cache or args.out.with_suffix(".jsonl")
    check_images(grid, args.data_root)
    for target in (args.out, cache_path):  # fail before evaluating anything, not after the first image
        check_writable(target)
    cache = ResultsCache(cache_path)
    flops_fn = None
    if args.flops and any(e.model is not None for e in entries):
        from moeisr.flops.per_image import PerImageFlops

        flops_fn = PerImageFlops()
    keys, new = evaluate(
        entries,
        grid,
        cache,
        device=args.device,
        root=args.data_root,
        with_lpips=args.lpips,
        flops_fn=flops_fn,
        progress=not args.quiet,
    )
    selected = cache.select(keys)
    atomic_write_text(args.out, selected.to_csv(index=False))
    summary = selected.groupby(["model", "dataset", "scale", "knob"], sort=False)[["psnr", "ssim", "lpips"]].mean()
    print(summary.round(4).to_string())
    print(f"{new} new rows; {len(selected)} rows written to {args.out}")
    return 0


def _canonical_limit(value: str) -> str:
    """--limit 'set5=3' → 'Set5=3' (the set spelt as --sets spells it); 'N' as is."""
    name, sep, count = value.rpartition("=")
    return f"{canonical_set_name(name)}={count}" if sep else value


def check_images(grid, root: Path | None) -> None:
    """UserError naming the first image of the grid that is unreadable or too small for one of its scales.

    Reads file headers only. An image is big enough for scale s when its LR (floor(side / s)) keeps at least
    one pixel and, after the protocol's border shave, the HR crop keeps an SSIM window's worth of pixels.
    Truncated pixel data is only found when the image is decoded; that error names the file too.
    """
    from moeisr.data.benchmark import list_images
    from moeisr.data.degrade import floor_lr_size
    from moeisr.data.images import image_size
    from moeisr.metrics._common import shave_for
    from moeisr.metrics.ssim_metric import SSIM_WINDOW

    for dataset in grid.sets:
        for path in list_images(dataset, root, grid.limit.get(dataset)):
            height, width = image_size(path)
            for scale in grid.scales:
                lr = floor_lr_size((height, width), scale)
                crop = [round(n * scale) for n in lr]
                shave = shave_for(scale, grid.protocol)
                if min(lr) < 1 or min(crop) - 2 * shave < SSIM_WINDOW:
                    raise UserError(
                        f"{path}: {width}x{height} pixels is too small to evaluate at x{scale:g} (after the LR crop "
                        f"and a {shave}-pixel border shave, SSIM needs {SSIM_WINDOW}x{SSIM_WINDOW} pixels); "
                        "remove the image from the set or drop the scale"
                    )
