"""Argument parsers shared by the subcommands (values are validated here, once)."""

from __future__ import annotations

import argparse
import importlib
import math
import re
import shlex
import sys
from pathlib import Path

from moeisr.errors import UserError


def csv_list(text: str) -> list[str]:
    """'a, b,c' → ['a', 'b', 'c'] (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


# "x4", "4x", "X4", "×4" (how papers and file names write a scale) are the number 4
_SCALE_MARK = re.compile(r"\s*(?:[xX×]\s*(?P<after>[^xX×]+?)|(?P<before>[^xX×]+?)\s*[xX×])\s*")


def strip_scale_mark(text: str) -> str:
    """'x4', '4x', 'X4', '×3.7' → '4' / '3.7' (any other text unchanged, for the caller to validate)."""
    match = _SCALE_MARK.fullmatch(str(text))
    return (match["after"] or match["before"]) if match else str(text).strip()


def parse_scale_text(text: str) -> float:
    """A --scale value: a number, optionally written x4 / 4x / X4, finite and >= 1; UserError otherwise."""
    from moeisr.models.base import parse_scale

    return parse_scale(strip_scale_mark(text))


def scale_list(option: str, example: str, allow_none: bool = False):
    """An argparse `type=` for comma-separated scales (each as `strip_scale_mark` reads it), each finite and
    >= 1; 'none' → [] if allowed."""

    def parse(text: str) -> list[float]:
        if allow_none and text.strip().lower() in ("", "none"):
            return []
        scales = []
        for item in csv_list(text):
            try:
                value = float(strip_scale_mark(item))
            except ValueError:
                raise UserError(f"{option}: {item!r} is not a number; use e.g. {option} {example}") from None
            if not math.isfinite(value) or value < 1:
                raise UserError(f"{option}: {item!r} must be a finite number >= 1")
            scales.append(value)
        return scales

    return parse


# Every image size the CLI reads or prints is width x height (columns x rows), as Pillow, image viewers and
# `file` show it: `moeisr sr --size`, `moeisr flops --lr-size`, and the messages naming an image's size.
SIZE_ORDER_HELP = "width x height in pixels (columns x rows, as image viewers show it)"


def parse_size(option: str, text: str, example: str = "1920x1080") -> tuple[int, int]:
    """'WxH' (width x height, e.g. '1920x1080'; 'x', 'X' or '×') → (H, W), the (rows, columns) the library
    takes; UserError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(text))
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise UserError(
            f"{option} {text!r} is not WxH ({SIZE_ORDER_HELP}) with positive integers, e.g. {option} {example}"
        )
    return int(match[2]), int(match[1])


def set_list(text: str) -> list[str]:
    """An argparse `type=` for comma-separated set names, each mapped to its canonical spelling ('set5' →
    'Set5', 'bsd100' → 'B100'); UserError naming the nearest valid name otherwise."""
    from moeisr.data.layout import canonical_set_name

    names = [canonical_set_name(item) for item in csv_list(text)]
    if not names:
        raise UserError(f"--sets {text!r} names no set; use e.g. --sets Set5,Set14")
    return list(dict.fromkeys(names))


def stage_list(module: str):
    """An argparse `type=` for a comma-separated subset of `module`'s STAGES (imported when parsing, not before)."""

    def parse(text: str) -> list[str]:
        known = importlib.import_module(module).STAGES
        stages = csv_list(text)
        if not stages or any(s not in known for s in stages):
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated subset of {','.join(known)}")
        return stages

    return parse


def add_overrides_argument(parser, help_text: str) -> None:
    """`--set KEY=VALUE ...` (repeatable), spec overrides collected in `args.overrides`."""
    parser.add_argument(
        "--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=help_text
    )


def add_device_progress_arguments(parser) -> None:
    """`--device` and `--no-progress`, as `moeisr train`, `reproduce` and `ablations` take them."""
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_pipeline_arguments(
    parser, *, stages_from: str, stage_names: str, overrides_help: str, retrain_help: str
) -> None:
    """The options `moeisr reproduce` and `moeisr ablations` share (both resolve their folders through
    `moeisr.pipeline.reproduce.default_paths`): the profile, the stages (a subset of the STAGES of the module
    `stages_from`, shown as `stage_names`), the folders, `--set` spec overrides, `--retrain`, the device and
    `--no-progress`."""
    parser.add_argument("--profile", default="cpu", help="smoke, cpu or paper (default: cpu)")
    parser.add_argument(
        "--stages", type=stage_list(stages_from), default=None, metavar=stage_names, help="stages to run (default: all)"
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
    add_overrides_argument(parser, overrides_help)
    parser.add_argument("--retrain", action="store_true", help=retrain_help)
    add_device_progress_arguments(parser)
    parser.set_defaults(device="auto")
    for action in parser._actions:
        if action.dest == "device":
            action.help = "auto (cuda when a GPU is visible, else cpu), cpu, cuda or cuda:N (default: auto)"


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; any other name unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def pipeline_options(args) -> dict:
    """The keyword arguments of `add_pipeline_arguments`' options for `reproduce` / `run_ablations`, with the
    command line as typed (stages left to the function's default, all, when --stages is not given)."""
    options = {
        "profile": args.profile,
        "results": args.results,
        "runs": args.runs,
        "cache": args.cache,
        "device": resolve_device(args.device),
        "overrides": args.overrides,
        "retrain": args.retrain,
        "progress": not args.no_progress,
        "command": " ".join(shlex.quote(a) for a in ["moeisr", *sys.argv[1:]]),
    }
    if args.stages:
        options["stages"] = args.stages
    return options
