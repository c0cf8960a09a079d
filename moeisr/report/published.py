"""Published figures, quoted for comparison only (other hardware, data and training budgets).

Bicubic: PSNR (dB) on Y with shave = scale, as tabulated across the SR literature (e.g. the EDSR and
LIIF papers) and in the shared data's README.

LIIF/LTE: `PUBLISHED_SR` holds the published PSNRs to quote next to our rows in `tables/published.md`.
It is **empty on purpose**: the papers' tables could not be read from a primary source with the tools this
suite was built with, and numbers typed from memory are not citations. Fill it from the papers (one
`PublishedResult` per table cell, with the table it comes from) and `published_table` renders them.
"""

from __future__ import annotations

from dataclasses import dataclass

BICUBIC_PSNR = {
    ("Set5", 2): 33.66, ("Set5", 3): 30.39, ("Set5", 4): 28.42,
    ("Set14", 2): 30.24, ("Set14", 3): 27.55, ("Set14", 4): 26.00,
    ("B100", 2): 29.56, ("B100", 3): 27.21, ("B100", 4): 25.96,
    ("Urban100", 2): 26.88, ("Urban100", 3): 24.46, ("Urban100", 4): 23.14,
}  # fmt: skip


@dataclass(frozen=True)
class PublishedResult:
    """One published PSNR cell: `family` is the model column of ours it corresponds to ("liif" or "lte")."""

    paper: str  # e.g. "LIIF (Chen, Liu, Wang, CVPR 2021)"
    table: str  # e.g. "Table 1"
    model: str  # the paper's row, e.g. "EDSR-baseline-LIIF"
    family: str
    dataset: str  # our set name: "DIV2K", "Set5", ...
    scale: float
    psnr: float  # dB, the paper's protocol (LIIF's: RGB shave scale+6 on DIV2K, Y shave scale on benchmarks)


PUBLISHED_SR: tuple[PublishedResult, ...] = ()

# Where the rows to quote are, for whoever fills PUBLISHED_SR (and printed in tables/published.md).
SOURCES = (
    'LIIF: Chen, Liu, Wang, "Learning Continuous Image Representation with Local Implicit Image Function", '
    "CVPR 2021 (arXiv:2012.09161): Table 1, EDSR-baseline-LIIF on DIV2K validation (in- and out-of-distribution "
    "scales); Table 2, the benchmark sets (Set5, Set14, B100, Urban100).",
    'LTE: Lee, Jin, "Local Texture Estimator for Implicit Representation Function", CVPR 2022 '
    "(arXiv:2111.08918): Table 1, EDSR-baseline-LTE on DIV2K validation; Table 2, benchmark sets. The official "
    "repository's README (jaewon-lee-b/lte) maps Table 1 to EDSR-baseline-LTE and Table 2 to RDN-LTE and "
    "SwinIR-LTE, so the published EDSR-baseline rows are on DIV2K, a set not in the shared data.",
)
