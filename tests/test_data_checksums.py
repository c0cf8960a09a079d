"""Data root resolution, SHA256SUMS verification and the `moeisr data` command."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import moeisr.data.roots as roots
from moeisr.cli import main
from moeisr.data import check, data_root, verify
from moeisr.data.checksums import read_sums
from moeisr.errors import UserError

SAMPLE = ("benchmark/Set5/HR/baby.webp", "benchmark/Set5/HR/bird.webp", "train/T91/t1.webp")


@pytest.fixture
def small_root(tmp_path) -> Path:
    """A data root holding three real files and their lines of the real SHA256SUMS."""
    real = data_root()
    lines = [line for line in (real / "SHA256SUMS").read_text().splitlines() if line.split("  ./")[1] in SAMPLE]
    assert len(lines) == len(SAMPLE)
    for rel in SAMPLE:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real / rel, tmp_path / rel)
    (tmp_path / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.data
def test_data_root_order(tmp_path, monkeypatch):
    real = data_root()
    assert (real / "SHA256SUMS").is_file()
    assert data_root(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv("MOEISR_DATA", str(tmp_path))
    assert data_root() == tmp_path.resolve()
    assert data_root(real) == real  # the argument wins over the environment
    monkeypatch.setenv("MOEISR_DATA", str(tmp_path / "nope"))
    with pytest.raises(UserError, match="MOEISR_DATA"):
        data_root()
    with pytest.raises(UserError, match="missing-dir"):
        data_root(tmp_path / "missing-dir")


def test_data_root_fallbacks(tmp_path, monkeypatch):
    monkeypatch.delenv("MOEISR_DATA", raising=False)
    work = tmp_path / "a" / "work"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    fake_repo = tmp_path / "b" / "repo"
    fake_repo.mkdir(parents=True)
    monkeypatch.setattr(roots, "repo_root", lambda: fake_repo)
    with pytest.raises(UserError) as info:
        data_root()
    message = str(info.value)
    assert str(tmp_path / "a" / "shared" / "data") in message
    assert str(tmp_path / "b" / "shared" / "data") in message
    assert "MOEISR_DATA" in message and "\n" not in message
    (tmp_path / "b" / "shared" / "data").mkdir(parents=True)
    assert data_root() == (tmp_path / "b" / "shared" / "data").resolve()  # repo-relative fallback
    (tmp_path / "a" / "shared" / "data").mkdir(parents=True)
    assert data_root() == (tmp_path / "a" / "shared" / "data").resolve()  # cwd-relative comes first


@pytest.mark.data
def test_verify_small_root_ok_then_tampered(small_root):
    assert verify(small_root, progress=False) == []
    assert check(small_root) == 3
    with open(small_root / SAMPLE[1], "ab") as handle:
        handle.write(b"\0")
    problems = verify(small_root, progress=False)
    assert [(p.relpath, p.kind) for p in problems] == [(SAMPLE[1], "mismatch")]
    with pytest.raises(UserError, match="bird.webp: checksum mismatch") as info:
        check(small_root)
    assert "\n" not in str(info.value)
    (small_root / SAMPLE[2]).unlink()
    problems = verify(small_root, progress=False)
    assert [(p.relpath, p.kind) for p in problems] == [(SAMPLE[1], "mismatch"), (SAMPLE[2], "missing")]
    assert verify(small_root, progress=False, only=["benchmark/Set5/HR/baby.webp"]) == []


def test_malformed_or_missing_sums(tmp_path):
    with pytest.raises(UserError, match="SHA256SUMS"):
        verify(tmp_path, progress=False)
    (tmp_path / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(UserError, match="SHA256SUMS:1"):
        verify(tmp_path, progress=False)
    (tmp_path / "SHA256SUMS").write_text("0" * 64 + "  ./../outside.png\n")
    with pytest.raises(UserError, match="leaves the data root"):
        read_sums(tmp_path)


@pytest.mark.data
def test_cli_verify_reports_bad_file(small_root, capsys):
    assert main(["data", "verify", "--root", str(small_root), "--no-progress"]) == 0
    assert "3 files OK" in capsys.readouterr().out
    (small_root / SAMPLE[0]).write_bytes(b"tampered")
    assert main(["data", "verify", "--root", str(small_root), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "2 of 3 files OK" in captured.out
    error_lines = [line for line in captured.err.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "baby.webp" in error_lines[0]


@pytest.mark.data
def test_cli_verify_real_root(capsys):
    """Hashes every listed file of the shared data (~870 files, about 2 s)."""
    root = data_root()
    assert main(["data", "verify", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"{len(read_sums(root))} files OK" in out


@pytest.mark.data
def test_cli_list(capsys):
    assert main(["data", "list", "--root", str(data_root())]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[2:]}
    assert rows["Set5"] == ["5", "x2", "x3", "x4"]
    assert rows["B100"][0] == "100" and rows["Urban100"] == ["100", "-"]
    assert rows["T91"][0] == "91" and rows["BSD200"][0] == "200"


def test_cli_missing_root_is_one_line_error(tmp_path, capsys):
    assert main(["data", "verify", "--root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and "\n" not in err
