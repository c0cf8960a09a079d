"""Integrity of the data folder against its `SHA256SUMS` (the `sha256sum` format: "<hex>  ./path").

`verify` returns every problem (missing file, checksum mismatch) so a report can list them all;
`check` raises a one-line UserError naming the first bad file, for code that just needs good data.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from moeisr.data.roots import data_root
from moeisr.errors import UserError

SUMS_FILE = "SHA256SUMS"
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")  # text (" ") or binary ("*") mode marker


@dataclass(frozen=True)
class ChecksumEntry:
    """One listed file: its expected digest and its path relative to the root (POSIX, no "./")."""

    digest: str
    relpath: str


@dataclass(frozen=True)
class ChecksumProblem:
    """A file that failed verification: kind is "missing" or "mismatch"."""

    relpath: str
    kind: str
    expected: str
    actual: str | None = None

    def message(self, root: Path) -> str:
        """One line naming the file and what to do."""
        if self.kind == "missing":
            return f"{root / self.relpath}: missing (listed in {SUMS_FILE}); restore the file or the data folder"
        return (
            f"{root / self.relpath}: checksum mismatch (expected {self.expected[:12]}…, got {self.actual[:12]}…); "
            "the file is corrupt or was modified: restore it"
        )


def read_sums(root: Path) -> list[ChecksumEntry]:
    """Parse root/SHA256SUMS; UserError on a missing file, a malformed line or a path leaving the root."""
    sums = root / SUMS_FILE
    if not sums.is_file():
        raise UserError(f"{sums}: checksum list not found; is {root} the data root?")
    entries = []
    for number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise UserError(f"{sums}:{number}: not a sha256sum line ('<64 hex>  ./path'); fix or restore the file")
        rel = PurePosixPath(match.group(2).strip())
        if rel.is_absolute() or ".." in rel.parts:
            raise UserError(f"{sums}:{number}: path {rel} leaves the data root; fix or restore the file")
        entries.append(ChecksumEntry(match.group(1).lower(), rel.as_posix()))
    return entries


def select_entries(entries: list[ChecksumEntry], only: Iterable[str] | None) -> list[ChecksumEntry]:
    """Entries whose path equals or lies under one of `only` (relative, "./" allowed); all when None."""
    if only is None:
        return entries
    prefixes = [PurePosixPath(p).as_posix().rstrip("/") for p in only]
    return [e for e in entries if any(e.relpath == p or e.relpath.startswith(p + "/") for p in prefixes)]


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verify(
    root: str | os.PathLike | None = None,
    progress: bool = True,
    only: Iterable[str] | None = None,
) -> list[ChecksumProblem]:
    """Hash every file listed in root/SHA256SUMS; return the problems (empty list when all match).

    root: data root (resolved by `data_root`). progress: show a tqdm bar on stderr.
    only: restrict to these relative paths or path prefixes (e.g. "benchmark/Set5"); None checks all.
    """
    root_path = data_root(root)
    entries = select_entries(read_sums(root_path), only)
    problems = []
    for entry in tqdm(entries, desc="verify", unit="file", disable=not progress, leave=False):
        path = root_path / entry.relpath
        if not path.is_file():
            problems.append(ChecksumProblem(entry.relpath, "missing", entry.digest))
            continue
        actual = sha256_file(path)
        if actual != entry.digest:
            problems.append(ChecksumProblem(entry.relpath, "mismatch", entry.digest, actual))
    return problems


def count_entries(root: str | os.PathLike | None = None, only: Iterable[str] | None = None) -> int:
    """Number of files `verify` would check."""
    return len(select_entries(read_sums(data_root(root)), only))


def problems_error(problems: list[ChecksumProblem], root: Path) -> UserError:
    """A one-line UserError naming the first problem (and how many more there are)."""
    more = f" (and {len(problems) - 1} more bad files)" if len(problems) > 1 else ""
    return UserError(problems[0].message(root) + more)


def check(root: str | os.PathLike | None = None, progress: bool = False, only: Iterable[str] | None = None) -> int:
    """Verify and raise a one-line UserError naming the first bad file; return the number of files checked."""
    root_path = data_root(root)
    problems = verify(root_path, progress=progress, only=only)
    if problems:
        raise problems_error(problems, root_path)
    return count_entries(root_path, only=only)
