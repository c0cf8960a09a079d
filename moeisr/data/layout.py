"""Folder layout of the data root: which named set lives where, and which files count as images.

```
benchmark/<Set>/HR/*                        Set5, Set14, B100, Urban100
benchmark/<Set>/LR_bicubic/X{k}/<name>x{k}.*  reference LR (MATLAB bicubic), where present
train/T91/*, train/BSD200/*                 training images
DIV2K_valid_HR/, DIV2K_train_HR/            DIV2K (0801.png ...), for users who have it; also accepted
                                            one level down, under DIV2K/ or div2k/ (LIIF's load/div2k)
DIV2K_valid_LR_bicubic/X{k}/<name>x{k}.*    DIV2K's reference LR, next to DIV2K_valid_HR
```
"""

from __future__ import annotations

import difflib
from pathlib import Path

from PIL import Image

from moeisr.errors import UserError

BENCHMARK_SETS = ("Set5", "Set14", "B100", "Urban100")
DIV2K_SETS = {"DIV2K": "DIV2K_valid_HR", "DIV2K_train": "DIV2K_train_HR"}
TRAIN_SETS = {"T91": Path("train") / "T91", "BSD200": Path("train") / "BSD200"}
ALIASES = {"bsd100": "B100", "div2k_valid": "DIV2K", "div2k-valid": "DIV2K", "div2k-train": "DIV2K_train"}
ALL_SETS = (*BENCHMARK_SETS, "DIV2K", "T91", "BSD200", "DIV2K_train")
DIV2K_PARENTS = (Path("."), Path("DIV2K"), Path("div2k"))


def image_extensions() -> frozenset[str]:
    """Lower-case suffixes (".png", ".webp", ...) of every format this Pillow build can open."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def image_files(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files skipped)."""
    exts = image_extensions()
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts
    )


def canonical_set_name(name: str, choices: tuple[str, ...] = ALL_SETS) -> str:
    """Map a user-given set name to its canonical spelling (case-insensitive, known aliases).

    Raises UserError with the nearest valid name when unknown.
    """
    by_lower = {c.lower(): c for c in choices}
    key = name.strip().lower()
    key = ALIASES.get(key, key).lower()
    if key in by_lower:
        return by_lower[key]
    near = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.0)
    hint = f"; did you mean {by_lower[near[0]]}?" if near else ""
    raise UserError(f"unknown set {name!r}{hint} (valid: {', '.join(choices)})")


def div2k_dir(root: Path, folder: str) -> Path | None:
    """The existing DIV2K `folder` (e.g. "DIV2K_valid_HR") under root, root/DIV2K or root/div2k."""
    for parent in DIV2K_PARENTS:
        path = root / parent / folder
        if path.is_dir():
            return path
    return None


def set_hr_dir(name: str, root: Path) -> Path:
    """HR folder of a canonical set name under `root`; UserError saying what to do if it is missing."""
    if name in BENCHMARK_SETS:
        path = root / "benchmark" / name / "HR"
    elif name in TRAIN_SETS:
        path = root / TRAIN_SETS[name]
    elif name in DIV2K_SETS:
        found = div2k_dir(root, DIV2K_SETS[name])
        if found is None:
            raise UserError(
                f"{name}: no {DIV2K_SETS[name]} folder under {root} (or its DIV2K/ subfolder); DIV2K is not in the "
                "shared data: download it and place the folder there"
            )
        return found
    else:
        raise UserError(f"unknown set {name!r} (valid: {', '.join(ALL_SETS)})")
    if not path.is_dir():
        raise UserError(f"{name}: folder {path} is missing; check the data root (MOEISR_DATA or --root)")
    return path


def reference_lr_dir(name: str, root: Path, scale: int) -> Path | None:
    """Folder of the reference LR images of a set at integer `scale`, or None when there is none."""
    if name in BENCHMARK_SETS:
        path = root / "benchmark" / name / "LR_bicubic" / f"X{scale}"
    elif name == "DIV2K":
        parent = div2k_dir(root, "DIV2K_valid_LR_bicubic")
        if parent is None:
            return None
        path = parent / f"X{scale}"
    else:
        return None
    return path if path.is_dir() else None
