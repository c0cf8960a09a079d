"""The one place the tests find the shared data (no tests here; tests/conftest.py wraps it as fixture and marker).

The root follows the library's rule (`moeisr.data.roots`): `$MOEISR_DATA`, else `../shared/data` beside the
current directory or the checkout. The fallback folders are taken when the test session starts, so that a test
that moves the working directory or hides the checkout (monkeypatching `repo_root`) still finds its images;
`$MOEISR_DATA` is read at each call. When the root is missing, a test that needs it is skipped on a
developer's machine, but fails under CI (the `CI` environment variable set, as every CI service does): a CI
run that skipped every data test would pass while checking nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moeisr.data.roots import ENV_VAR, candidate_roots, data_root
from moeisr.errors import UserError

FALLBACKS = candidate_roots()  # ../shared/data beside the cwd and the checkout, as the session starts


def in_ci() -> bool:
    """True when the `CI` environment variable is set to anything but empty, 0, false or no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_data_root() -> tuple[Path | None, str]:
    """(the data root, "") if it holds benchmark/ and train/, else (None, why not)."""
    if os.environ.get(ENV_VAR):
        try:
            root = data_root()
        except UserError as exc:
            return None, str(exc)
    else:
        root = next((path for path in FALLBACKS if path.is_dir()), None)
        if root is None:
            tried = ", ".join(str(path) for path in FALLBACKS)
            return None, f"no data root found (tried {tried}); set {ENV_VAR}=/path/to/shared/data"
    missing = [name for name in ("benchmark", "train") if not (root / name).is_dir()]
    if missing:
        folders = " or ".join(f"{m}/" for m in missing)
        return None, f"data root {root} has no {folders} folder; point {ENV_VAR} at the shared data folder"
    return root, ""


def require_data_root() -> Path:
    """The shared data root; skips the calling test without it, or fails it when running under CI."""
    root, why = find_data_root()
    if root is not None:
        return root
    if in_ci():
        pytest.fail(f"shared data not found ({why}); CI is set, so a test that needs it fails", pytrace=False)
    pytest.skip(f"shared data not found ({why}); under CI this fails")


def benchmark(set_name: str) -> Path:
    """The folder of a benchmark set (HR/ and LR_bicubic/ inside), e.g. benchmark("Set5") / "HR" / "baby.webp"."""
    return require_data_root() / "benchmark" / set_name
