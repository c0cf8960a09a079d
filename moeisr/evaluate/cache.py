"""The evaluation results cache: tidy rows, one JSON object per line, one row per evaluated image.

A row is keyed by everything that can change its numbers (`KEY_COLUMNS`): the checkpoint's bytes
(`ckpt_hash`), the canonical set name, the image's name and the HR file's content (`image_hash`), the
scale, the inference knob, the metric protocol ("benchmark" or "div2k") and its version, and the numeric
precision (fp32 or bf16). The metric set is not part of the key: a lookup names the metrics it needs, and a
row whose requested metric is NaN (written with --no-lpips or --no-flops) counts as missing, so a full row
serves any request and a partial one is recomputed when a metric it lacks is asked for.

Crash safety: `append` takes an exclusive `FileLock`, writes complete lines with O_APPEND and fsyncs
them before returning, so rows already appended survive a `kill -9`. The worst a killed writer leaves is
one truncated last line; readers ignore it and the next `append` (or `compact`) cuts it off before
writing. Duplicate keys are allowed in the file (a re-run may recompute a row); readers keep the last.

Sealed rows: `<path>.gz` beside the file, if present, is a read-only gzip of earlier rows that counts as part of
the cache (its rows come first, so the plain file's rows win). `seal` folds the plain file into it and removes the
plain file; that is how the cpu profile's cache snapshot is committed (about a fifth of the plain size).

Rows written before `image_hash`, `protocol` and `precision` were key columns (cache format 1) are refused
with a pointer to `migrate_legacy_rows`, which fills them in (`moeisr cache migrate`).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from moeisr.data.layout import ALL_SETS, canonical_set_name
from moeisr.errors import UserError
from moeisr.io import FileLock, atomic_write_bytes, atomic_write_text, content_hash, user_error_for, write_all

log = logging.getLogger(__name__)

KEY_COLUMNS = (
    "ckpt_hash",
    "dataset",
    "image",
    "image_hash",
    "scale",
    "knob",
    "protocol",
    "protocol_version",
    "precision",
)
LEGACY_KEY_COLUMNS = ("ckpt_hash", "dataset", "image", "scale", "knob", "protocol_version")  # cache format 1
METRIC_COLUMNS = ("psnr", "ssim", "lpips", "gflops")
REQUIRED_COLUMNS = (
    "model",
    "run_id",
    *KEY_COLUMNS,
    *METRIC_COLUMNS,
    "seconds",
    "commit",
    "profile",
)
SHARE_PREFIX = "share_"  # expert shares share_0..share_{J-1}; absent (NaN) for non-MoE models
BICUBIC_HASH = "bicubic"  # the "checkpoint" of the bicubic baseline
PROTOCOLS = ("benchmark", "div2k")
KEY_PRECISIONS = ("fp32", "bf16")


class CacheKey(NamedTuple):
    ckpt_hash: str
    dataset: str  # canonical set name (Set5, not set5)
    image: str  # file stem
    image_hash: str  # content_hash of the HR file
    scale: float
    knob: str  # knob_label(...) of the inference knob; "none" = the model's default
    protocol: str  # metric protocol: "benchmark" (Y, shave = scale) or "div2k" (RGB, shave = scale + 6)
    protocol_version: int
    precision: str  # "fp32" or "bf16"


def knob_label(knob: Any) -> str:
    """The canonical text of an inference knob: None -> 'none', numbers -> repr(float), strings as they are."""
    if knob is None:
        return "none"
    if isinstance(knob, str):
        return knob
    if isinstance(knob, bool):
        raise TypeError(f"a knob must be None, a number or a string, got {knob!r}")
    return repr(float(knob))


def dataset_label(name: str) -> str:
    """The canonical spelling of a known set name ('set5' -> 'Set5'); other names unchanged."""
    try:
        return canonical_set_name(str(name), ALL_SETS)
    except UserError:
        return str(name)


def make_key(
    ckpt_hash: str,
    dataset: str,
    image: str,
    image_hash: str,
    scale: float,
    knob: Any = None,
    protocol: str = "benchmark",
    protocol_version: int = 1,
    precision: str = "fp32",
) -> CacheKey:
    """A normalised key: scale as float, knob as its label, the canonical set name, so that 4 and 4.0,
    0.5 and '0.5', or set5 and Set5 match. ValueError for an unknown protocol or precision."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    if precision not in KEY_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (known: {', '.join(KEY_PRECISIONS)})")
    return CacheKey(
        str(ckpt_hash),
        dataset_label(dataset),
        str(image),
        str(image_hash),
        float(scale),
        knob_label(knob),
        str(protocol),
        int(protocol_version),
        str(precision),
    )


def key_of(item: CacheKey | Mapping | tuple) -> CacheKey:
    """The key of a row (a mapping with the key columns) or of a key-like tuple.

    KeyError naming `LEGACY_FORMAT` for a row of cache format 1 (see `migrate_legacy_rows`).
    """
    if isinstance(item, Mapping):
        if "image_hash" not in item and all(c in item for c in LEGACY_KEY_COLUMNS):
            raise KeyError(LEGACY_FORMAT)
        return make_key(**{c: item[c] for c in KEY_COLUMNS})
    return make_key(*item)


LEGACY_FORMAT = "cache format 1 (no image_hash, protocol, precision)"


def image_hash(path: str | os.PathLike) -> str:
    """`content_hash` of an HR image file: the cache key's image identity (memoised by path, size and mtime)."""
    st = os.stat(path)
    return _image_hash(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _image_hash(path: str, size: int, mtime_ns: int) -> str:
    return content_hash(path)


def metrics_present(row: Mapping) -> frozenset[str]:
    """The metric columns of `row` that hold a number (not NaN, not missing)."""
    present = set()
    for column in METRIC_COLUMNS:
        value = row.get(column)
        if isinstance(value, int | float) and not (isinstance(value, float) and math.isnan(value)):
            present.add(column)
    return frozenset(present)


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
    rows, bad, legacy = [], 0, 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key_of(row)
        except KeyError as exc:
            legacy += exc.args == (LEGACY_FORMAT,)
            bad += exc.args != (LEGACY_FORMAT,)
            continue
        except (ValueError, TypeError):
            bad += 1
            continue
        rows.append(row)
    if legacy:
        raise UserError(
            f"{source}: {legacy} row(s) of {LEGACY_FORMAT}; migrate them with `moeisr cache migrate {source}` "
            "(fills in the image hashes from the data root) or move the file away to recompute"
        )
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


def _latest(rows: Iterable[dict]) -> list[dict]:
    """One row per key: the last one wins, at its last position."""
    latest: dict[CacheKey, dict] = {}
    for row in rows:
        key = key_of(row)
        latest.pop(key, None)  # a re-written key moves to its last position
        latest[key] = row
    return list(latest.values())


def _gzip(data: bytes) -> bytes:
    """Deterministic gzip (no file name or time in the header): the same rows give the same bytes."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
        f.write(data)
    return buffer.getvalue()


class ResultsCache:
    """Append-only JSON-lines store of tidy evaluation rows at `path` (created on first append), read together
    with the sealed rows of `<path>.gz` if that exists (module docstring).

    Safe for several processes at once: appends are serialised by `FileLock(path)` (`<path>.lock`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.sealed_path = self.path.with_name(self.path.name + ".gz")
        # Incremental key index: the keys of the complete lines in bytes [0, _offset) of the file
        # whose (device, inode) is _file_id; _tail holds the bytes just before _offset, to notice
        # a file that was replaced by one that happens to reuse the inode number.
        self._keys: dict[CacheKey, frozenset[str]] = {}  # key -> the metrics its last row holds
        self._offset = 0
        self._file_id: tuple[int, int] | None = None
        self._tail = b""

    # ------------------------------------------------------------------------------------ reading

    @functools.cached_property
    def _sealed_rows(self) -> list[dict]:
        """The rows of `<path>.gz` (read once: it only changes through `seal`), [] without it."""
        try:
            data = gzip.decompress(self.sealed_path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, EOFError) as exc:
            raise UserError(f"{self.sealed_path}: unreadable sealed cache ({exc})") from exc
        return _parse_lines(data, self.sealed_path)

    @functools.cached_property
    def _sealed_keys(self) -> dict[CacheKey, frozenset[str]]:
        return {key_of(r): metrics_present(r) for r in self._sealed_rows}

    def _read_bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise user_error_for(exc, self.path, action="read") from exc

    def _reset_index(self) -> None:
        """Start the key index over from the sealed rows (the plain file is then read from its start)."""
        self._keys, self._offset, self._file_id, self._tail = dict(self._sealed_keys), 0, None, b""

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
                    self._reset_index()
                f.seek(self._offset)
                new = _complete_part(f.read())
        except FileNotFoundError:
            self._reset_index()
            return
        except OSError as exc:
            raise user_error_for(exc, self.path, action="read") from exc
        rows = _parse_lines(new, self.path)
        self._keys.update((key_of(r), metrics_present(r)) for r in rows)
        self._file_id = file_id
        self._offset += len(new)
        self._tail = (self._tail + new)[-64:]

    def keys(self) -> set[CacheKey]:
        """Every key with a stored row (re-reads only what was appended since the last call)."""
        self._refresh_keys()
        return set(self._keys)

    def has(self, key: CacheKey | Mapping | tuple, metrics: Iterable[str] = ()) -> bool:
        """Whether a row with this key is stored and holds every metric in `metrics`."""
        self._refresh_keys()
        present = self._keys.get(key_of(key))
        return present is not None and set(metrics) <= present

    def missing(self, keys: Iterable[CacheKey | Mapping | tuple], metrics: Iterable[str] = ()) -> list[CacheKey]:
        """The (normalised) keys without a stored row holding every metric in `metrics`, in order, each once."""
        self._refresh_keys()
        wanted = set(metrics)
        unknown = wanted - set(METRIC_COLUMNS)
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)} (known: {', '.join(METRIC_COLUMNS)})")
        out: dict[CacheKey, None] = {}
        for item in keys:
            key = key_of(item)
            present = self._keys.get(key)
            if present is None or not wanted <= present:
                out[key] = None
        return list(out)

    def select(self, keys: Iterable[CacheKey | Mapping | tuple]):
        """`load()` restricted to the rows of `keys` (in file order); keys without a row are left out."""
        frame = self.load()
        if frame.empty:
            return frame
        wanted = {key_of(k) for k in keys}
        mask = [make_key(*k) in wanted for k in zip(*(frame[c] for c in KEY_COLUMNS), strict=True)]
        return frame[mask].reset_index(drop=True)

    def _plain_rows(self) -> list[dict]:
        return _parse_lines(_complete_part(self._read_bytes()), self.path)

    def rows(self) -> list[dict]:
        """The stored rows as dicts, one per key: the last one written wins, at its position (sealed rows first,
        then the file's)."""
        return _latest([*self._sealed_rows, *self._plain_rows()])

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
            frame = frame.astype({"scale": float, "protocol_version": int, "knob": str, "image_hash": str})
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
        """Rewrite the file atomically with one row per key (dropping unreadable lines); returns its row count.
        Sealed rows stay in `<path>.gz`."""
        with FileLock(self.path):
            if not self.path.exists():
                return 0
            rows = _latest(self._plain_rows())
            atomic_write_bytes(self.path, b"".join(_encode(r) for r in rows))
        return len(rows)

    def seal(self) -> int:
        """Fold every row into `<path>.gz` (one per key, deterministic gzip) and remove the plain file; returns
        the sealed row count. Readers see the same rows before and after."""
        with FileLock(self.path):
            rows = self.rows()
            atomic_write_bytes(self.sealed_path, _gzip(b"".join(_encode(r) for r in rows)))
            self.path.unlink(missing_ok=True)
        self._sealed_rows = rows  # what was just written: no need to read it back
        self.__dict__.pop("_sealed_keys", None)  # cached_property: derived from them again
        self._reset_index()
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
    try:
        return content_hash(path)
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found") from None
    except OSError as exc:
        raise user_error_for(exc, Path(path), action="read") from exc


def migrate_legacy_rows(path: str | os.PathLike, root: str | os.PathLike | None = None) -> tuple[int, int]:
    """Rewrite a cache of format 1 in the current key format; returns (rows migrated, rows dropped).

    Each legacy row gets the content hash of its HR file under the data root `root` (found by set and
    stem; a row whose image is not there is dropped with a warning), the protocol its set implies (div2k
    for DIV2K, else benchmark: format 1 did not record it, and every committed row used those), and
    precision fp32 (format 1 evaluated in fp32 only). Rows already in the current format are kept as
    they are. The file is replaced atomically under the cache's lock.
    """
    from moeisr.data.benchmark import list_images

    path = Path(path)
    stems: dict[str, dict[str, Path]] = {}
    migrated = dropped = 0
    out = []
    with FileLock(path):
        for line in _complete_part(path.read_bytes()).splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if "image_hash" not in row:
                dataset = dataset_label(row["dataset"])
                if dataset not in stems:
                    stems[dataset] = {p.stem: p for p in list_images(dataset, root)}
                hr = stems[dataset].get(str(row["image"]))
                if hr is None:
                    log.warning(
                        "%s: no HR file for %s/%s under the data root; row dropped", path, dataset, row["image"]
                    )
                    dropped += 1
                    continue
                row.update(
                    dataset=dataset,
                    image_hash=image_hash(hr),
                    protocol="div2k" if dataset.startswith("DIV2K") else "benchmark",
                    precision="fp32",
                )
                migrated += 1
            out.append(_normalise_row(row))
        atomic_write_bytes(path, b"".join(_encode(r) for r in out))
    return migrated, dropped
