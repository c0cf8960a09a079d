"""`moeisr train SPEC --profile P --out RUN_DIR [--resume] [--device D] [--init CKPT] [--set key=value ...]`."""

from __future__ import annotations

import os
import sys

from moeisr.commands.arguments import add_device_progress_arguments, add_overrides_argument
from moeisr.config import load_experiment
from moeisr.io import check_writable


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train an experiment (LIIF, LTE or MoEISR) into a run directory",
        description=(
            "Train the experiment SPEC (e.g. experiments/liif.yaml) under a profile into RUN_DIR, writing "
            "RUN_DIR/log.csv, RUN_DIR/last.pt (resumable) and RUN_DIR/final.pt. An experiment with init_from "
            "starts from RUN_DIR/../<init_from>/final.pt unless --init is given. Distributed: "
            "torchrun --nproc_per_node N -m moeisr train ..."
        ),
    )
    parser.add_argument("spec", metavar="SPEC", help="experiment file, e.g. experiments/liif.yaml")
    parser.add_argument("--profile", required=True, help="profile of the experiment: smoke, cpu or paper")
    parser.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory (must be new unless --resume)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt (same config hash)")
    parser.add_argument("--init", metavar="CKPT", default=None, help="checkpoint to start an init_from experiment from")
    add_overrides_argument(parser, "override a spec key, e.g. --set optim.lr=1e-4 data.batch_size=8")
    add_device_progress_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from moeisr.train import TrainingInterrupted, train

    experiment = load_experiment(args.spec, args.profile, args.overrides)  # refuses NaN/inf scales, one line
    if not args.resume:  # a new run directory: fail now if it cannot be created, not after loading data
        check_writable(args.out)
    try:
        final = train(
            experiment, args.out, resume=args.resume, device=args.device, progress=not args.no_progress, init=args.init
        )
    except TrainingInterrupted as stop:
        if os.environ.get("RANK", "0") == "0":
            print(f"moeisr train: {stop}; continue with --resume", file=sys.stderr)
        return 128 + int(stop.signum)
    if os.environ.get("RANK", "0") == "0":  # one line under torchrun, not one per process
        print(final)
    return 0
