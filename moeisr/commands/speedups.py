"""`moeisr speedups [--results results] [--repeats 3] [--max-load 1.5]`: measured speed-ups of the trained models."""

from __future__ import annotations

from pathlib import Path

from moeisr.commands.arguments import scale_list, set_list


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "speedups",
        help="time each efficient model against its equal-budget backbone, one image per cell of the main grid",
        description=(
            "Wall-clock speed-ups of the bundled MoEISR and LMF checkpoints over their equal-budget backbones, per "
            "set and scale of RESULTS/main.csv: one representative image per cell, every model timed alternately "
            "in this process, median of REPEATS rounds after a warm-up. Appends each cell to RESULTS/speedups.csv "
            "as it finishes (a re-run measures only the missing cells); the report's main and efficiency tables "
            "read it. Run it with nothing else on the machine."
        ),
    )
    parser.add_argument("--results", type=Path, default=Path("results"), help="results folder (default: results)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per cell, median taken (default: 3)")
    parser.add_argument("--sets", type=set_list, default=None, metavar="S,S,...", help="only these sets")
    parser.add_argument("--scales", type=scale_list("--scales", "2,4"), default=None, metavar="S,S,...",
                        help="only these scales")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    parser.add_argument("--fresh", action="store_true", help="discard RESULTS/speedups.csv and measure every cell")
    parser.add_argument(
        "--max-load",
        type=float,
        default=1.5,
        help="refuse to start when the 1-minute load average is above this (default: 1.5; the machine must be "
        "quiet for a speed-up to mean anything)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from moeisr.errors import UserError
    from moeisr.pipeline.speedups import measure_speedups

    if args.repeats < 3:
        raise UserError(f"--repeats {args.repeats}: at least 3 rounds, so that the median means something")
    measure_speedups(args.results, repeats=args.repeats, sets=args.sets, scales=args.scales, device=args.device,
                     fresh=args.fresh, max_load=args.max_load)  # fmt: skip
    return 0
