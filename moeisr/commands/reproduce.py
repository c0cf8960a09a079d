"""`moeisr reproduce [--profile smoke|cpu|paper] [--retrain] [--stages train,eval,report] ...`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from moeisr.commands.arguments import scale_list


def _stages(text: str) -> list[str]:
    from moeisr.report.reproduce import STAGES

    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated subset of {','.join(STAGES)}")
    return stages


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="train or reuse every model, evaluate the grid, regenerate tables, figures and REPORT.md",
        description=(
            "The main job: LIIF, LTE, MoEISR over each, and each backbone fine-tuned for MoEISR's budget. Bundled "
            "checkpoints (RESULTS/checkpoints/<experiment>.pt) are reused when their config hash matches, else the "
            "experiment is trained (resuming RUNS/<profile>/<experiment>); the evaluation cache makes re-runs compute "
            "only what is missing. Writes RESULTS/main.csv, tables/, figures/, REPORT.md and timings.json."
        ),
    )
    parser.add_argument("--profile", default="cpu", help="smoke, cpu or paper (default: cpu)")
    parser.add_argument(
        "--retrain",
        action="store_true",
        help="ignore the bundled checkpoints: train into the runs folder (a finished or interrupted run there is "
        "used; move it away to start over)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results folder (default: results/ for cpu, results/paper/ for paper, RUNS/<profile>/results otherwise)",
    )
    parser.add_argument("--runs", type=Path, default=None, help="runs root (default: $MOEISR_RUNS or runs/)")
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="evaluation cache folder (default: ${MOEISR_CACHE:-~/.cache/moeisr}/<profile>)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--stages", type=_stages, default=None, metavar="train,eval,report", help="stages to run (default: all)"
    )
    parser.add_argument(
        "--large-scales",
        type=scale_list("--large-scales", "18,24,30", allow_none=True),
        default=None,
        metavar="S,S,...|none",
        help="extra scales on sets whose images are large enough (default: 18,24,30 for paper, none otherwise)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key of every experiment, e.g. --set eval.limit=2 (hashed keys change the config hash)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from moeisr.report.reproduce import STAGES, reproduce

    command = " ".join(shlex.quote(a) for a in ["moeisr", *sys.argv[1:]])
    reproduce(
        args.profile,
        stages=args.stages or STAGES,
        retrain=args.retrain,
        results=args.results,
        runs=args.runs,
        cache=args.cache,
        device=args.device,
        overrides=args.overrides,
        large_scales=args.large_scales,
        progress=not args.no_progress,
        command=command,
    )
    return 0
