"""Published PSNRs, quoted for context only (other encoders, training data, budgets and hardware).

`published_sr.csv` beside this file is a verbatim copy of the shared `published/published_sr.csv`: the LIIF and
LTE papers' published PSNRs (DIV2K validation for EDSR-baseline and RDN at ×2–×30; Set5, Set14, B100 and Urban100
for RDN at ×2–×8 and RDN-LTE at ×2–×4) and the bicubic baselines, one row per table cell with the table it
comes from (`source`) and its metric protocol. `tests/test_report_published.py` checks that the copy equals
the shared file.

Only the bicubic rows are directly comparable with ours (same images and protocol; bicubic has no training).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from moeisr.data.layout import ALIASES

PUBLISHED_CSV = Path(__file__).with_name("published_sr.csv")


@dataclass(frozen=True)
class PublishedResult:
    """One published PSNR cell. `family`: the model column of ours it belongs beside ("bicubic", "liif",
    "lte"), or "" for context rows (MetaSR, the fixed-scale EDSR/RDN) that have no counterpart here."""

    method: str  # the paper's row, e.g. "RDN-LIIF"
    family: str
    dataset: str  # our set name: "DIV2K", "Set5", ...
    scale: float
    psnr: float  # dB, under `protocol`
    protocol: str  # e.g. "Y, shave scale" or "RGB, shave scale+6"
    source: str  # the paper and table


def family_of(method: str) -> str:
    """'bicubic' -> 'bicubic'; '...-LIIF' -> 'liif'; '...-LTE' -> 'lte'; anything else -> ''."""
    if method == "bicubic":
        return "bicubic"
    for suffix in ("LIIF", "LTE"):
        if method.endswith(f"-{suffix}"):
            return suffix.lower()
    return ""


@functools.lru_cache(maxsize=1)
def published_results(path: Path = PUBLISHED_CSV) -> tuple[PublishedResult, ...]:
    """Every row of the published CSV, set names mapped to ours (DIV2K_valid -> DIV2K)."""
    frame = pd.read_csv(path)
    return tuple(
        PublishedResult(
            method=str(r.method),
            family=family_of(str(r.method)),
            dataset=ALIASES.get(str(r.dataset).lower(), str(r.dataset)),
            scale=float(r.scale),
            psnr=float(r.psnr),
            protocol=str(r.psnr_protocol),
            source=str(r.source),
        )
        for r in frame.itertuples()
    )


def bicubic_psnr() -> dict[tuple[str, int], float]:
    """The published bicubic PSNR by (set, integer scale), on the benchmark sets and DIV2K."""
    return {(p.dataset, int(p.scale)): p.psnr for p in published_results() if p.family == "bicubic"}
