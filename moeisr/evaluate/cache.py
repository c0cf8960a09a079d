"""The evaluation results cache: tidy rows, one JSON object per line, one row per evaluated image.

A row is keyed by `(ckpt_hash, dataset, image, scale, knob, protocol_version)`: the same checkpoint
bytes, image, scale and inference knob under the same evaluation protocol give the same numbers, so an
interrupted or repeated grid run only computes the keys that are `missing`.

Crash safety: `append` takes an exclusive `FileLock`, writes complete lines with O_APPEND and fsyncs
them before returning, so rows already appended survive a `kill -9`. The worst a killed writer leaves is
one truncated last line; readers ignore it and the next `append` (or `compact`) cuts it off before
writing. Duplicate keys are allowed in the file (a re-run may recompute a row); readers keep the last.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from moeisr.errors import UserError
from moeisr.io import FileLock, atomic_write_bytes, atomic_write_text, user_error_for, write_all

log = logging.getLogger(__name__)

KEY_COLUMNS = ("ckpt_hash", "dataset", "image", "scale", "knob", "protocol_version")
REQUIRED_COLUMNS = (
    "model",
    "run_id",
    *KEY_COLUMNS,
    "psnr",
    "ssim",
    "lpips",
    "gflops",
    "seconds",
    "commit",
    "profile",
)
SHARE_PREFIX = "share_"  # expert shares share_0..share_{J-1}; absent (NaN) for non-MoE models
BICUBIC_HASH = "bicubic"  # the "checkpoint" of the bicubic baseline


class CacheKey(NamedTuple):
    ckpt_hash: str
    dataset: str
    image: str
    scale: float
    knob: str  # knob_label(...) of the inference knob; "none" = the model's default
    protocol_version: int


def knob_label(knob: Any) -> str:
    """The canonical text of an inference knob: None -> 'none', numbers -> repr(float), strings as they are."""
    if knob is None:
        return "none"
    if isinstance(knob, str):
        return knob
    if isinstance(knob, bool):
        raise TypeError(f"a knob must be None, a number or a string, got {knob!r}")
    return repr(float(knob))


def make_key(
    ckpt_hash: str, dataset: str, image: str, scale: float, knob: Any = None, protocol_version: int = 1
) -> CacheKey:
    """A normalised key (scale as float, knob as its label) so that 4 and 4.0, or 0.5 and '0.5', match."""
    return CacheKey(str(ckpt_hash), str(dataset), str(image), float(scale), knob_label(knob), int(protocol_version))


def key_of(item: CacheKey | Mapping | tuple) -> CacheKey:
    """The key of a row (a mapping with the key columns) or of a key-like tuple."""
    if isinstance(item, Mapping):
        return make_key(*(item[c] for c in KEY_COLUMNS))
    return make_key(*item)


def _plain(value: Any) -> Any:
    """numpy / torch scalars -> Python scalars, so that json can write them."""
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def _normalise_row(row: Mapping) -> dict:
    missing = [c for c in REQUIRED_COLUMNS if c not in row]
    if missing:
        raise ValueError(f"result row lacks columns {missing}: {dict(row)}")
    out = {k: _plain(v) for k, v in row.items()}
    out.update(key_of(out)._asdict())
    return out


def _encode(row: Mapping) -> bytes:
    # NaN/inf are written as json's NaN/Infinity tokens: Python reads them back exactly.
    return (json.dumps(row, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


def _parse_lines(data: bytes, source: Path) -> list[dict]:
    """Rows of the complete lines in `data`, skipping (with a warning) lines that are not valid rows."""
    rows, bad = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key_of(row)
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        rows.append(row)
    if bad:
        log.warning("%s: skipped %d unreadable line(s)", source, bad)
    return rows


def _complete_part(data: bytes) -> bytes:
    """Everything up to the last newline: a trailing partial line is a writer that died or is mid-write."""
    return data[: data.rfind(b"\n") + 1]


def _cut_partial_tail(fd: int) -> None:
    """Truncate a partial last line left by a killed writer (call under the exclusive lock)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            end = start + newline + 1
            break
        end = start
    log.warning("dropping a truncated last line (%d bytes) left by an interrupted writer", size - end)
    os.ftruncate(fd, end)


class ResultsCache:
    """Append-only JSON-lines store of tidy evaluation rows at `path` (created on first append).

    Safe for several processes at once: appends are serialised by `FileLock(path)` (`<path>.lock`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        # Incremental key index: the keys of the complete lines in bytes [0, _offset) of the file
        # whose (device, inode) is _file_id; _tail holds the bytes just before _offset, to notice
        # a file that was replaced by one that happens to reuse the inode number.
        self._keys: set[CacheKey] = set()
        self._offset = 0
        self._file_id: tuple[int, int] | None = None
        self._tail = b""

    # ------------------------------------------------------------------------------------ reading

    def _read_bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise user_error_for(exc, self.path, action="read") from exc

    def _refresh_keys(self) -> None:
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                file_id = (st.st_dev, st.st_ino)
                same_file = file_id == self._file_id and st.st_size >= self._offset
                if same_file and self._tail:
                    f.seek(self._offset - len(self._tail))
                    same_file = f.read(len(self._tail)) == self._tail
                if not same_file:
                    self._keys, self._offset, self._tail = set(), 0, b""
                f.seek(self._offset)
                new = _complete_part(f.read())
        except FileNotFoundError:
            self._keys, self._offset, self._file_id, self._tail = set(), 0, None, b""
            return
        except OSError as exc:
            raise user_error_for(exc, self.path, action="read") from exc
        rows = _parse_lines(new, self.path)
        self._keys.update(key_of(r) for r in rows)
        self._file_id = file_id
        self._offset += len(new)
        self._tail = (self._tail + new)[-64:]

    def keys(self) -> set[CacheKey]:
        """Every key with a stored row (re-reads only what was appended since the last call)."""
        self._refresh_keys()
        return set(self._keys)

    def has(self, key: CacheKey | Mapping | tuple) -> bool:
        """Whether a row with this key is stored."""
        self._refresh_keys()
        return key_of(key) in self._keys

    def missing(self, keys: Iterable[CacheKey | Mapping | tuple]) -> list[CacheKey]:
        """The (normalised) keys without a stored row, in the given order, each once."""
        self._refresh_keys()
        out: dict[CacheKey, None] = {}
        for item in keys:
            key = key_of(item)
            if key not in self._keys:
                out[key] = None
        return list(out)

    def rows(self) -> list[dict]:
        """The stored rows as dicts, one per key: the last one written wins, at its position in the file."""
        rows = _parse_lines(_complete_part(self._read_bytes()), self.path)
        latest: dict[CacheKey, dict] = {}
        for row in rows:
            key = key_of(row)
            latest.pop(key, None)  # a re-written key moves to its last position
            latest[key] = row
        return list(latest.values())

    def load(self):
        """A pandas DataFrame of `rows()`: required columns first, then share_0.., then any extras.

        Missing values (e.g. expert shares of non-MoE models) are NaN.
        """
        import pandas as pd

        frame = pd.DataFrame.from_records(self.rows())
        shares = sorted((c for c in frame.columns if c.startswith(SHARE_PREFIX)), key=_share_index)
        extras = [c for c in frame.columns if c not in REQUIRED_COLUMNS and c not in shares]
        frame = frame.reindex(columns=[*REQUIRED_COLUMNS, *shares, *extras])
        if len(frame):
            frame = frame.astype({"scale": float, "protocol_version": int, "knob": str})
        return frame.reset_index(drop=True)

    # ------------------------------------------------------------------------------------ writing

    def append(self, rows: Iterable[Mapping]) -> int:
        """Append rows (mappings with at least REQUIRED_COLUMNS); returns how many were written.

        Key columns are normalised (see `make_key`). The rows are fsynced before this returns, so they
        survive a crash from then on. Re-appending a key is allowed: readers keep the last row.
        """
        data = b"".join(_encode(_normalise_row(r)) for r in rows)
        if not data:
            return 0
        with FileLock(self.path):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
            except OSError as exc:
                raise user_error_for(exc, self.path) from exc
            try:
                _cut_partial_tail(fd)
                write_all(fd, data)  # one write: O_APPEND puts it whole at the end
                os.fsync(fd)
            except OSError as exc:
                raise user_error_for(exc, self.path) from exc
            finally:
                os.close(fd)
        return data.count(b"\n")

    def compact(self) -> int:
        """Rewrite the file atomically with one row per key (dropping unreadable lines); returns the row count."""
        with FileLock(self.path):
            if not self.path.exists():
                return 0
            rows = self.rows()
            atomic_write_bytes(self.path, b"".join(_encode(r) for r in rows))
        return len(rows)

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Export `load()` as CSV to `path`, atomically."""
        return atomic_write_text(path, self.load().to_csv(index=False))


def _share_index(column: str) -> float:
    suffix = column[len(SHARE_PREFIX) :]
    return int(suffix) if suffix.isdigit() else math.inf


def ckpt_hash(path: str | os.PathLike) -> str:
    """First 12 hex digits of the file's sha256; the bicubic baseline ('bicubic') hashes to 'bicubic'."""
    if str(path) == BICUBIC_HASH:
        return BICUBIC_HASH
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except OSError as exc:
        raise user_error_for(exc, Path(path), action="read") from exc
    return digest.hexdigest()[:12]
