"""`moeisr data verify|list`: check the data folder against SHA256SUMS, and show which sets are present."""

from __future__ import annotations

import argparse

from moeisr.data.checksums import problems_error, read_sums, select_entries, verify
from moeisr.data.layout import ALL_SETS, image_files, reference_lr_dir, set_hr_dir
from moeisr.data.roots import data_root
from moeisr.errors import UserError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="verify the data folder or list the image sets found",
        description="Verify the data folder against its SHA256SUMS, or list the image sets found in it.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    verify_parser = actions.add_parser(
        "verify", help="check every file listed in SHA256SUMS", description="Hash every file listed in SHA256SUMS."
    )
    verify_parser.add_argument("--root", help="data folder (default: $MOEISR_DATA, else ../shared/data)")
    verify_parser.add_argument(
        "--only", nargs="+", metavar="PATH", help="check only these paths or folders, e.g. benchmark/Set5"
    )
    verify_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify_parser.set_defaults(func=run_verify)

    list_parser = actions.add_parser("list", help="show the sets found and their image counts")
    list_parser.add_argument("--root", help="data folder (default: $MOEISR_DATA, else ../shared/data)")
    list_parser.set_defaults(func=run_list)

    for sub in (verify_parser, list_parser):
        # the dispatcher adds --debug to `moeisr data` only; accept it after the action too
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run_verify(args: argparse.Namespace) -> int:
    root = data_root(args.root)
    total = len(select_entries(read_sums(root), args.only))
    if total == 0:
        raise UserError(f"nothing to verify: no file of SHA256SUMS under {root} matches {' '.join(args.only)}")
    problems = verify(root, progress=not args.no_progress, only=args.only)
    if problems:
        print(f"{total - len(problems)} of {total} files OK under {root}; {len(problems)} bad")
        raise problems_error(problems, root)
    print(f"{total} files OK under {root}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    root = data_root(args.root)
    print(f"data root: {root}")
    print(f"{'set':<12} {'images':>6}  reference LR")
    found = 0
    for name in ALL_SETS:
        try:
            folder = set_hr_dir(name, root)
        except UserError:
            continue
        found += 1
        scales = [f"x{k}" for k in range(2, 9) if reference_lr_dir(name, root, k) is not None]
        print(f"{name:<12} {len(image_files(folder)):>6}  {' '.join(scales) or '-'}")
    if not found:
        raise UserError(f"no image sets under {root}; expected benchmark/<Set>/HR or train/<Set> folders")
    return 0
