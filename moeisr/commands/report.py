"""`moeisr report bicubic --csv results/bicubic.csv --out results/tables/bicubic.md`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from moeisr.errors import UserError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="render tables from results CSVs", description="Render Markdown tables from tidy results."
    )
    parser.add_argument("table", choices=["bicubic"], help="which table to render")
    parser.add_argument("--csv", type=Path, required=True, help="tidy results CSV (from `moeisr eval`)")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write (atomically)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import pandas as pd

    from moeisr.data.benchmark import list_images
    from moeisr.io import atomic_write_text
    from moeisr.provenance import current_commit, header
    from moeisr.report.tables import bicubic_note, bicubic_table

    if not args.csv.is_file():
        raise UserError(f"{args.csv}: no such results file; produce it with `moeisr eval`")
    frame = pd.read_csv(args.csv)
    commits = sorted(set(frame["commit"].astype(str)))
    sizes = {name: len(list_images(name)) for name in frame["dataset"].unique()}
    title = "# Bicubic baseline (PSNR/SSIM on Y, shave = scale; LPIPS(alex) on RGB)\n\n"
    text = (
        title
        + f"_Results computed at commit {', '.join(commits)}._\n"
        + header(current_commit(), command=" ".join(shlex.quote(a) for a in ["moeisr", *sys.argv[1:]]))
        + "\n"
        + bicubic_table(frame, sizes)
        + "\n\n"
        + bicubic_note(frame)
    )
    atomic_write_text(args.out, text)
    print(text)
    return 0
