"""Crash-safe file writes and an inter-process lock.

Every artefact the suite writes (checkpoints, result tables, reports) goes through `atomic_write_*`:
the data lands in a temporary file in the target's directory, is fsynced, and only then replaces the
target with `os.replace`. A crash, a full disk or a `kill -9` therefore leaves either the old file or
the new one, never a half-written mix. `FileLock` serialises processes appending to a shared file.
`check_writable` lets a command refuse an unwritable output before it starts long work, and
`user_error_for` / `environment_error_message` turn OS errors (full disk, permissions) into one line.
"""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from moeisr.errors import UserError

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def user_error_for(exc: OSError, path: str | os.PathLike | None = None, action: str = "write") -> UserError:
    """Translate an OSError into a one-line UserError naming `path` (default: the error's own filename)."""
    if path is None:
        path = exc.filename
    if path is None:  # e.g. a failed write() on an open file: the OS does not say which
        if exc.errno in _NO_SPACE:
            return UserError(f"cannot {action}: no space left on device (free some space and retry)")
        return UserError(f"cannot {action}: {exc.strerror or exc} (check the permissions of the output folders)")
    path = Path(os.fsdecode(path))
    if exc.errno in _NO_SPACE:
        return UserError(f"cannot {action} {path}: no space left on device (free some space and retry)")
    if exc.errno in _NOT_WRITABLE and action == "read":
        return UserError(f"cannot read {path}: permission denied")
    if exc.errno in _NOT_WRITABLE:
        return UserError(
            f"cannot {action} {path}: directory {path.parent} is not writable (check its permissions or pick another)"
        )
    if exc.errno == errno.ENOTDIR:
        return UserError(f"cannot {action} {path}: a parent of it is a file, not a directory")
    return UserError(f"cannot {action} {path}: {exc.strerror or exc}")


def environment_error_message(exc: BaseException) -> str | None:
    """One line for an OSError the user fixes outside the program (full disk, permissions, read-only
    filesystem), or None for any other exception (a bug, which keeps its traceback)."""
    if not isinstance(exc, OSError) or exc.errno not in (*_NO_SPACE, *_NOT_WRITABLE):
        return None
    if exc.errno in _NO_SPACE:
        return str(user_error_for(exc))
    where = f"{os.fsdecode(exc.filename)}: " if exc.filename is not None else ""
    return f"{where}{exc.strerror or exc} (check the permissions, or choose another path)"


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file's top-level object, or {} when the file is missing, unreadable or not an object."""
    import json

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def content_hash(path: str | os.PathLike) -> str:
    """First 12 hex digits of the sha256 of a file's bytes (OSError as raised by open)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def check_writable(path: str | os.PathLike) -> None:
    """UserError now, before any long computation, if `path` (a file or folder) could not be created later.

    Probes the nearest existing folder on the way to `path` with a throw-away file that is removed at once
    (permission bits alone do not tell: root, ACLs, read-only mounts). Creates nothing else.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:  # mkdir would start from here
        folder = folder.parent
    if not folder.is_dir():
        return  # a file in the way: the write itself reports it
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise user_error_for(exc, path) from exc
        raise UserError(
            f"cannot write {path}: folder {folder} is not writable ({exc.strerror}); check its permissions or "
            "choose another output path"
        ) from exc


def write_all(fd: int, data: bytes | memoryview) -> None:
    """`os.write` until every byte is written (a single write may be short)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename or a new file in `directory` durable. Best effort: some filesystems refuse it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_replace(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call `write(f)` on a temp file beside `path`, fsync it and rename it over `path`.

    On any failure the temp file is removed and `path` keeps its previous content; OSErrors become
    a UserError (full disk, read-only directory, ...).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise user_error_for(exc, path) from exc
    try:
        mode = path.stat().st_mode & 0o777  # keep the permissions of the file we replace
    except FileNotFoundError:
        mode = 0o666  # the umask applies, as for a plain open()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise user_error_for(exc, path) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise user_error_for(exc, path) from exc
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (all or nothing), creating parent directories. Returns the path."""
    return _atomic_replace(path, lambda f: write_all(f.fileno(), data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically (all or nothing), creating parent directories. Returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save(obj, path)`, atomically: an interrupted save never clobbers the previous checkpoint."""
    import torch

    return _atomic_replace(path, lambda f: torch.save(obj, f))


class FileLock:
    """An exclusive lock on `<path>.lock` (the `filelock` package: `fcntl.flock` on POSIX), as a context manager.

    Guards a resource shared by several processes (e.g. a results file many evaluators append to). The lock is
    advisory: only code that takes it is serialised. The kernel drops the lock of a dead process, so a `kill -9`
    never leaves a stale lock. `timeout` (seconds; None = wait forever) turns a lock held elsewhere into a one-line
    UserError; a lock file that cannot be created is a UserError naming it.
    """

    def __init__(self, path: str | os.PathLike, timeout: float | None = None):
        import filelock

        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.timeout = timeout
        self._lock = filelock.FileLock(self.lock_path, timeout=-1 if timeout is None else timeout)

    def acquire(self) -> None:
        import filelock

        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except filelock.Timeout:
            raise UserError(
                f"{self.lock_path} is held by another process after {self.timeout:g} s; "
                "wait for it to finish or stop it"
            ) from None
        except OSError as exc:
            raise user_error_for(exc, self.lock_path, action="lock") from exc

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
