"""Checkpoint arguments of the CLI (`moeisr sr`, `eval`, `flops`): short names, the default, missing files.

A short name (`liif`, `moeisr_liif`, `moeisr-liif`, `MoEISR-LIIF`, `liif.pt`) names a bundled checkpoint
`results/checkpoints/<name>.pt` of the repository that holds the `moeisr` package (`repo_root()`: the checkout
for `pip install -e .`), whatever the working directory. A package installed from a wheel sits in
site-packages, where there is no results/ folder: short names then find nothing and the error says so.
An existing file always wins over a short name.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from moeisr.errors import UserError

CHECKPOINT_DIR = Path("results") / "checkpoints"
SUFFIXES = (".pt", ".pth")
# The checkpoint `moeisr sr` uses without CKPT: the first of these short names that exists, best first (recipe v2,
# the report's headline MoEISR, before recipe v1's).
DEFAULT_NAMES = ("moeisr_liif_v2", "moeisr_liif", "liif", "default")
OFFICIAL = (
    "official LIIF/LTE pretrained .pth files are linked from the READMEs of https://github.com/yinboc/liif and "
    "https://github.com/jaewon-lee-b/lte (moeisr reads their format as is)"
)
SHORT_NAME_HELP = (
    "a short name (liif, lte, moeisr_liif_v2 or moeisr-liif-v2, moeisr_lte_v2, ...) for "
    "results/checkpoints/<name>.pt of the checkout holding the moeisr package, whatever the working directory"
)


def checkpoint_dir() -> Path:
    """results/checkpoints of the repository holding the `moeisr` package."""
    from moeisr.data.roots import repo_root

    return repo_root() / CHECKPOINT_DIR


def short_names(directory: Path | None = None) -> list[str]:
    """The short names available: the stems of the .pt/.pth files in `directory` (default `checkpoint_dir()`)."""
    folder = checkpoint_dir() if directory is None else directory
    if not folder.is_dir():
        return []
    return sorted({p.stem for p in folder.iterdir() if p.is_file() and p.suffix in SUFFIXES})


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def find_short_name(name: str, directory: Path | None = None) -> Path | None:
    """The bundled checkpoint a short name names (case, '-' vs '_' and a .pt/.pth suffix ignored), or None."""
    folder = checkpoint_dir() if directory is None else directory
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix.lower() in SUFFIXES else name
    wanted = _key(stem)
    if not wanted or not folder.is_dir():
        return None
    for candidate in sorted(folder.iterdir()):
        if candidate.is_file() and candidate.suffix in SUFFIXES and _key(candidate.stem) == wanted:
            return candidate
    return None


def default_checkpoint(directory: Path | None = None) -> Path | None:
    """The first of DEFAULT_NAMES bundled in `directory` (default `checkpoint_dir()`), or None."""
    for name in DEFAULT_NAMES:
        found = find_short_name(name, directory)
        if found is not None:
            return found
    return None


def available_text() -> str:
    """'liif, lte, ... (in DIR)', or why there are none."""
    folder = checkpoint_dir()
    names = short_names(folder)
    if names:
        return f"short names: {', '.join(names)} (the .pt files in {folder})"
    return (
        f"no short names here: {folder} does not exist or holds no .pt files (short names need the moeisr "
        "package of a git checkout, installed with pip install -e)"
    )


def resolve_checkpoint(text: str) -> Path:
    """A CKPT argument → the checkpoint file: an existing path as is, else a short name's bundled file.

    UserError (one line) when it is neither: it names the short names available, where the official LIIF/LTE
    .pth files come from, and the nearest short name if the text looks like a misspelt one.
    """
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise UserError(f"checkpoint {text} is a folder; pass a .pt/.pth file or a short name ({available_text()})")
    is_name = len(path.parts) == 1 and not text.startswith(".")
    if is_name:
        found = find_short_name(text)
        if found is not None:
            return found
    hint = ""
    if is_name:
        near = difflib.get_close_matches(_key(path.stem), short_names(), n=1, cutoff=0.6)
        hint = f" (did you mean {near[0]}?)" if near else ""
    what = "is neither a file nor a bundled short name" if is_name else "does not exist"
    raise UserError(f"checkpoint {text} {what}{hint}; {available_text()}; {OFFICIAL}")
