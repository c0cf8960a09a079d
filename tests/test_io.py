"""Atomic writes keep the previous file on any failure; FileLock serialises processes."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import torch
from shared_data import benchmark

from moeisr.errors import UserError
from moeisr.io import FileLock, atomic_torch_save, atomic_write_bytes, atomic_write_text


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_creates_parents_and_keeps_permissions(tmp_path):
    target = tmp_path / "deep" / "er" / "table.md"
    atomic_write_text(target, "first\n")
    target.chmod(0o640)
    atomic_write_text(target, "second\n")
    assert target.read_text() == "second\n"
    assert target.stat().st_mode & 0o777 == 0o640
    payload = (benchmark("Set5") / "HR" / "baby.webp").read_bytes()  # real bytes, not text
    atomic_write_bytes(tmp_path / "copy.webp", payload)
    assert (tmp_path / "copy.webp").read_bytes() == payload
    assert leftovers(target.parent) == [] and leftovers(tmp_path) == []


def test_full_disk_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    atomic_write_text(target, "old content\n")
    real_write = os.write
    calls = []

    def write_then_fill_up(fd, data):  # the first chunk lands, then the disk is full
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", write_then_fill_up)
    with pytest.raises(UserError) as info:
        atomic_write_bytes(target, b"x" * 100_000)
    monkeypatch.undo()
    assert str(info.value) == f"cannot write {target}: no space left on device (free some space and retry)"
    assert len(calls) == 2
    assert target.read_text() == "old content\n"
    assert leftovers(tmp_path) == []


def test_full_disk_at_fsync_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "ckpt.pt"
    atomic_torch_save({"w": torch.arange(4.0)}, target)

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(UserError, match="no space left on device"):
        atomic_torch_save({"w": torch.zeros(1000)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(4.0))
    assert leftovers(tmp_path) == []


def test_interrupt_mid_save_removes_the_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    atomic_write_text(target, "v1")

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "v2")
    monkeypatch.undo()
    assert target.read_text() == "v1" and leftovers(tmp_path) == []


# A process that cannot write the directory. Root ignores permission bits, so as root a child process
# imports the library first and then drops to user `nobody` before writing.
NOT_WRITABLE = textwrap.dedent(
    """
    import os, sys
    from moeisr.errors import UserError
    from moeisr.io import atomic_write_text
    if os.geteuid() == 0:
        os.setgid(65534)
        os.setuid(65534)
    try:
        atomic_write_text(sys.argv[1], "new content")
    except UserError as exc:
        print(exc)
    """
)


def test_non_writable_directory_is_a_user_error_and_keeps_the_old_file():
    root = Path(tempfile.mkdtemp(prefix="moeisr-io-"))  # outside pytest's root-only tmp folder
    try:
        root.chmod(0o755)
        folder = root / "ro"
        folder.mkdir()
        target = folder / "results.csv"
        target.write_text("old content\n")
        target.chmod(0o644)
        folder.chmod(0o555)
        out = subprocess.run([sys.executable, "-c", NOT_WRITABLE, str(target)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        expected = f"cannot write {target}: directory {folder} is not writable (check its permissions or pick another)"
        assert out.stdout.strip() == expected
        assert target.read_text() == "old content\n"
        assert leftovers(folder) == []
    finally:
        (root / "ro").chmod(0o755)
        shutil.rmtree(root)


def test_a_file_in_place_of_a_directory_is_a_user_error(tmp_path):
    (tmp_path / "results").write_text("I am a file")
    with pytest.raises(UserError, match="cannot write"):
        atomic_write_text(tmp_path / "results" / "table.csv", "x")


# ------------------------------------------------------------------------------------------- lock


def test_lock_excludes_other_holders(tmp_path):
    resource = tmp_path / "cache.jsonl"
    with FileLock(resource):
        assert (tmp_path / "cache.jsonl.lock").exists()
        with pytest.raises(UserError, match="is held by another process after 0 s"):
            FileLock(resource, timeout=0).acquire()
    with FileLock(resource, timeout=0):
        pass


HOLD_LOCK = textwrap.dedent(
    """
    import sys, time
    from moeisr.io import FileLock
    lock = FileLock(sys.argv[1])
    lock.acquire()
    print("locked", flush=True)
    time.sleep(600)
    """
)


def test_a_killed_holder_releases_the_lock(tmp_path):
    resource = tmp_path / "cache.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(resource)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError):
            FileLock(resource, timeout=0).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        with FileLock(resource, timeout=0):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
