"""`moeisr eval (CKPT|NAME=CKPT|bicubic)... --sets ... --scales ... --out results.csv`."""

from __future__ import annotations

from pathlib import Path

from moeisr.commands.arguments import csv_list, scale_list
from moeisr.errors import UserError
from moeisr.flops.source import parse_knob


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate checkpoints (or bicubic) on benchmark sets, with a resumable cache",
        description="Evaluate models on a grid of sets and scales. Rows already in the cache are not recomputed.",
    )
    parser.add_argument("models", nargs="+", metavar="MODEL", help="'bicubic', a checkpoint, or NAME=CHECKPOINT")
    parser.add_argument("--sets", type=csv_list, default=["Set5", "Set14", "B100", "Urban100"])
    parser.add_argument("--scales", type=scale_list("--scales", "2,3,4"), default=[2.0, 3.0, 4.0])
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
        help="MoEISR routing knob (repeatable; default: plain argmax routing)",
    )
    parser.add_argument("--out", type=Path, required=True, help="CSV of the requested grid, written atomically")
    parser.add_argument("--cache", type=Path, default=None, help="results cache (default: OUT with .jsonl suffix)")
    parser.add_argument("--protocol", choices=["benchmark", "div2k"], default="benchmark")
    parser.add_argument("--no-lpips", dest="lpips", action="store_false", help="skip LPIPS")
    parser.add_argument("--no-flops", dest="flops", action="store_false", help="skip FLOPs counting")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from moeisr.evaluate.cache import KEY_COLUMNS, ResultsCache, make_key
    from moeisr.evaluate.runner import (
        Grid,
        bicubic_entry,
        checkpoint_entry,
        evaluate,
        parse_limits,
    )

    entries = []
    for spec in args.models:
        if spec == "bicubic":
            entries.append(bicubic_entry())
            continue
        name, _, path = spec.rpartition("=")
        entries.append(checkpoint_entry(path, name or None, device=args.device))
    try:
        limits = parse_limits(args.limit, args.sets)
    except ValueError:
        raise UserError(f"--limit: use N or SET=N, got {args.limit}") from None
    grid = Grid(sets=args.sets, scales=args.scales, knobs=args.knobs or [None], limit=limits, protocol=args.protocol)
    cache = ResultsCache(args.cache or args.out.with_suffix(".jsonl"))
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
    frame = cache.load()
    wanted = set(keys)
    row_keys = zip(*(frame[c] for c in KEY_COLUMNS), strict=True)
    selected = frame[[make_key(*key) in wanted for key in row_keys]]
    from moeisr.io import atomic_write_text

    atomic_write_text(args.out, selected.to_csv(index=False))
    summary = selected.groupby(["model", "dataset", "scale", "knob"], sort=False)[["psnr", "ssim", "lpips"]].mean()
    print(summary.round(4).to_string())
    print(f"{new} new rows; {len(selected)} rows written to {args.out}")
    return 0
