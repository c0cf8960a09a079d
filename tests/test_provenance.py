"""`current_commit`: the clean commit, '+dirty' for changed tracked files, and prefixes that do not count."""

import shutil
import subprocess

import pytest

from moeisr.provenance import current_commit


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dirty_unless_only_ignored_prefixes_changed(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "results").mkdir()
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "summary.json").write_text("{}\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    clean = current_commit(tmp_path)
    assert len(clean) == 12 and "+" not in clean
    (tmp_path / "untracked.txt").write_text("new\n")  # untracked files never count
    assert current_commit(tmp_path) == clean
    (tmp_path / "results" / "summary.json").write_text('{"a": 1}\n')
    assert current_commit(tmp_path) == clean  # generated outputs never count
    assert current_commit(tmp_path, ignore=()) == clean + "+dirty"
    (tmp_path / "code.py").write_text("x = 2\n")
    assert current_commit(tmp_path) == clean + "+dirty"
    git("checkout", "-q", "--", ".")
    (tmp_path / "runs" / "cpu").mkdir(parents=True)
    (tmp_path / "runs" / "cpu" / "log.csv").write_text("step\n")
    git("add", "runs")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "snapshot")
    snapshot = current_commit(tmp_path)
    (tmp_path / "runs" / "cpu" / "log.csv").write_text("step\n50\n")  # a training rewrote its snapshot
    assert current_commit(tmp_path) == snapshot
    assert current_commit(tmp_path / "nonexistent") == "unknown"
