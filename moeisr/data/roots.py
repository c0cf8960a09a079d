"""Where the data lives: one rule, used by the library, the CLI and the tests.

Order: an explicit `root` argument, else the `MOEISR_DATA` environment variable, else `../shared/data`
relative to the current directory, else `../shared/data` relative to the repository root (the parent
of the directory holding the installed `moeisr` package). An explicit or environment root that does not
exist is an error rather than a silent fallback, so a typo never benchmarks the wrong folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from moeisr.errors import UserError

ENV_VAR = "MOEISR_DATA"
FALLBACK = Path("..") / "shared" / "data"


def repo_root() -> Path:
    """The directory that holds the `moeisr` package folder (the checkout, for an editable install)."""
    import moeisr

    return Path(moeisr.__file__).resolve().parent.parent


def candidate_roots() -> list[Path]:
    """The fallback locations tried, in order, when neither an argument nor MOEISR_DATA is given."""
    candidates = [(Path.cwd() / FALLBACK).resolve(), (repo_root() / FALLBACK).resolve()]
    return list(dict.fromkeys(candidates))  # the two coincide when run from the checkout


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Resolve the data root directory (see the module docstring for the order).

    Raises UserError naming the paths tried and how to set MOEISR_DATA when none exists.
    """
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise UserError(f"data root {path} is not a directory; pass an existing folder (e.g. --root DIR)")
        return path.resolve()
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise UserError(f"{ENV_VAR}={env} is not a directory; point {ENV_VAR} at the data folder")
        return path.resolve()
    tried = candidate_roots()
    for path in tried:
        if path.is_dir():
            return path
    tried_text = ", ".join(str(p) for p in tried)
    raise UserError(f"no data root found (tried {tried_text}); set {ENV_VAR}=/path/to/data or pass --root DIR")
