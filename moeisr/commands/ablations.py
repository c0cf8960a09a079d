"""`moeisr ablations [--profile smoke|cpu|paper] [--stages train,eval,sweep,report] [--rows a,b] ...`."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from moeisr.commands.arguments import csv_list


def _stages(text: str) -> list[str]:
    from moeisr.ablations.run import STAGES

    stages = csv_list(text)
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated subset of {','.join(STAGES)}")
    return stages


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "ablations",
        help="the ablation suite: factor rows, the routing sweep, oracle and random routers (docs/ablations.md)",
        description=(
            "Rows of experiments/ablations/ablations.yaml, each the main MoEISR model with one factor changed, "
            "fine-tuned from the main job's trained backbone for the profile's shortened budget (reused by config "
            "hash, resumable); the controllable-routing sweep of the main MoEISR checkpoints with the oracle and "
            "random routers. Writes RESULTS/ablations/*.csv, RESULTS/tables/ablations.md, "
            "RESULTS/figures/ablations_*.png and the ablation section of RESULTS/REPORT.md."
        ),
    )
    parser.add_argument("--profile", default="cpu", help="smoke, cpu or paper (default: cpu)")
    parser.add_argument(
        "--stages",
        type=_stages,
        default=None,
        metavar="train,eval,sweep,report",
        help="stages to run (default: all)",
    )
    parser.add_argument(
        "--rows", type=csv_list, default=None, metavar="ROW,ROW", help="rows to run (default: the profile's rows)"
    )
    parser.add_argument("--results", type=Path, default=None, help="results folder (default: as moeisr reproduce)")
    parser.add_argument("--runs", type=Path, default=None, help="runs root (default: $MOEISR_RUNS or runs/)")
    parser.add_argument(
        "--cache", type=Path, default=None, help="evaluation cache folder (default: the main job's, per profile)"
    )
    parser.add_argument(
        "--suite", type=Path, default=None, help="suite file (default: experiments/ablations/ablations.yaml)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="extend",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key of the main experiments and every row (before the ablation budget)",
    )
    parser.add_argument(
        "--train-main", action="store_true", help="train the main job's checkpoints if missing (default: an error)"
    )
    parser.add_argument("--retrain", action="store_true", help="ignore the rows' bundled checkpoints")
    parser.add_argument("--plan", action="store_true", help="print the rows and the time estimate; run nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args) -> int:
    from moeisr.ablations.run import STAGES, run_ablations

    command = " ".join(shlex.quote(a) for a in ["moeisr", *sys.argv[1:]])
    run_ablations(
        args.profile,
        stages=args.stages or STAGES,
        rows=args.rows,
        results=args.results,
        runs=args.runs,
        cache=args.cache,
        suite=args.suite,
        device=args.device,
        overrides=args.overrides,
        train_main=args.train_main,
        retrain=args.retrain,
        plan_only=args.plan,
        progress=not args.no_progress,
        command=command,
    )
    return 0
