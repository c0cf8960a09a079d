"""Helpers for the end-to-end pipeline tests, tests/test_reproduce.py and tests/test_ablations.py (no tests here)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from shared_data import require_data_root

from moeisr.data.images import load_image, save_image

SET5_CROPS = ("baby", "bird")  # the smoke grid evaluates the first


def make_smoke_data_root(base: Path) -> Path:
    """`base/data`: a data root holding 96×96 crops (rows and columns 100:196) of two real Set5 images as PNG,
    so that a full-image decode takes a fraction of a second, and a link to the real training images."""
    real = require_data_root()
    root = base / "data"
    (root / "benchmark" / "Set5" / "HR").mkdir(parents=True)
    (root / "train").symlink_to(real / "train")
    for name in SET5_CROPS:
        image = load_image(real / "benchmark" / "Set5" / "HR" / f"{name}.webp")
        save_image(image[:, 100:196, 100:196], root / "benchmark" / "Set5" / "HR" / f"{name}.png")
    return root


@contextmanager
def smoke_workspace(base: Path) -> Iterator[tuple[Path, dict[str, Path]]]:
    """Yield (data root, folders) under `base` with $MOEISR_DATA pointing at the root until the block ends.

    The root is `make_smoke_data_root(base)`; folders are the pipeline's "results", "runs" and "cache" folders
    (not created), as keyword arguments of `reproduce` / `run_ablations`.
    """
    root = make_smoke_data_root(base)
    folders = {"results": base / "results", "runs": base / "runs", "cache": base / "cache"}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MOEISR_DATA", str(root))
        yield root, folders


def write_suite(folder: Path, text: str, name: str = "ablations.yaml") -> Path:
    """An ablation suite file `name` in `folder` with the (dedented) YAML `text`."""
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path
