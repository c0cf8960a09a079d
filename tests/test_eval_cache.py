"""The results cache: one row per key, survives kill -9, and concurrent appenders lose nothing."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from moeisr.errors import UserError
from moeisr.evaluate import REQUIRED_COLUMNS, CacheKey, ResultsCache, ckpt_hash, make_key


def row(i: int, ckpt: str = "abc123def456", shares: list[float] | None = None, **extra) -> dict:
    out = {
        "model": "liif",
        "run_id": "run-1",
        "ckpt_hash": ckpt,
        "dataset": "Set5",
        "image": f"img_{i:04d}",
        "image_hash": f"h{i:011d}",
        "scale": 4,
        "knob": None,
        "protocol": "benchmark",
        "protocol_version": 1,
        "precision": "fp32",
        "psnr": i / 10,
        "ssim": 0.9,
        "lpips": float("nan"),
        "gflops": 12.5,
        "seconds": 0.25,
        "commit": "0123abc",
        "profile": "smoke",
    }
    for j, share in enumerate(shares or []):
        out[f"share_{j}"] = share
    out.update(extra)
    return out


def test_append_has_missing_and_load(tmp_path):
    cache = ResultsCache(tmp_path / "results" / "cache.jsonl")
    assert cache.load().empty and list(cache.load().columns[: len(REQUIRED_COLUMNS)]) == list(REQUIRED_COLUMNS)
    assert cache.append([row(0), row(1, ckpt="moe000000001", shares=[np.float32(0.25), 0.75], knob=0.5)]) == 2
    assert cache.has(make_key("abc123def456", "set5", "img_0000", "h00000000000", 4.0))  # 4 and 4.0; set5 = Set5
    assert cache.has(("moe000000001", "Set5", "img_0001", "h00000000001", 4, "0.5", "benchmark", 1, "fp32"))
    assert not cache.has(make_key("abc123def456", "Set5", "img_0000", "h00000000000", 4.0, protocol_version=2))
    wanted = [row(0), row(2), row(2), row(3)]
    assert cache.missing(wanted) == [
        CacheKey("abc123def456", "Set5", "img_0002", "h00000000002", 4.0, "none", "benchmark", 1, "fp32"),
        CacheKey("abc123def456", "Set5", "img_0003", "h00000000003", 4.0, "none", "benchmark", 1, "fp32"),
    ]

    frame = cache.load()
    assert list(frame.columns) == [*REQUIRED_COLUMNS, "share_0", "share_1"]
    moe = frame.set_index("image").loc["img_0001"]
    assert (moe.share_0, moe.share_1, moe.knob) == (0.25, 0.75, "0.5")
    plain = frame.set_index("image").loc["img_0000"]
    assert math.isnan(plain.share_0) and math.isnan(plain.lpips) and plain.knob == "none"
    assert frame.scale.dtype == float and frame.protocol_version.dtype == np.int64


def test_re_appending_keys_keeps_one_row_per_key_the_last_one(tmp_path):
    cache = ResultsCache(tmp_path / "cache.jsonl")
    cache.append([row(i) for i in range(5)])
    cache.append([row(i, psnr=99.0, run_id="run-2") for i in (1, 3)])
    cache.append([row(3, psnr=42.0, run_id="run-3")])
    frame = cache.load()
    assert len(frame) == 5 and not frame.duplicated(["ckpt_hash", "image"]).any()
    by_image = frame.set_index("image")
    assert by_image.loc["img_0001"].psnr == 99.0 and by_image.loc["img_0003"].psnr == 42.0
    assert by_image.loc["img_0000"].psnr == 0.0
    assert len((tmp_path / "cache.jsonl").read_bytes().splitlines()) == 8
    assert cache.compact() == 5
    assert len((tmp_path / "cache.jsonl").read_bytes().splitlines()) == 5
    assert cache.load().equals(frame)
    assert cache.keys() == {make_key("abc123def456", "Set5", f"img_{i:04d}", f"h{i:011d}", 4) for i in range(5)}


def test_a_truncated_last_line_is_ignored_then_cut_before_the_next_append(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = ResultsCache(path)
    cache.append([row(0), row(1)])
    assert len(cache.keys()) == 2
    with open(path, "ab") as f:  # what a writer killed mid-line leaves behind
        f.write(json.dumps(row(2)).encode()[:40])
    assert len(cache.load()) == 2 and not cache.has(row(2))
    cache.append([row(3)])
    lines = path.read_bytes().splitlines()
    assert [json.loads(line)["image"] for line in lines] == ["img_0000", "img_0001", "img_0003"]
    assert cache.keys() == {make_key("abc123def456", "Set5", f"img_{i:04d}", f"h{i:011d}", 4) for i in (0, 1, 3)}


def test_sealing_keeps_every_row_and_later_appends_read_on_top(tmp_path):
    path = tmp_path / "cache.jsonl"
    cache = ResultsCache(path)
    cache.append([row(i) for i in range(4)])
    cache.append([row(1, psnr=99.0)])
    before = cache.load()
    assert cache.seal() == 4 and not path.exists() and (tmp_path / "cache.jsonl.gz").is_file()
    assert cache.load().equals(before) and ResultsCache(path).load().equals(before)  # this reader and a new one
    assert ResultsCache(path).has(row(1), ("psnr", "ssim")) and ResultsCache(path).missing([row(4)]) == [
        make_key("abc123def456", "Set5", "img_0004", "h00000000004", 4)
    ]
    sealed = (tmp_path / "cache.jsonl.gz").read_bytes()
    cache.append([row(4), row(2, psnr=42.0)])  # a plain file again, on top of the seal
    assert len(path.read_bytes().splitlines()) == 2 and cache.compact() == 2  # compact leaves the seal alone
    by_image = ResultsCache(path).load().set_index("image")
    assert len(by_image) == 5 and by_image.loc["img_0002"].psnr == 42.0 and by_image.loc["img_0001"].psnr == 99.0
    assert (tmp_path / "cache.jsonl.gz").read_bytes() == sealed
    again = tmp_path / "again" / "cache.jsonl"  # the same rows seal to the same bytes
    ResultsCache(again).append(cache.rows())
    assert ResultsCache(again).seal() == 5 and cache.seal() == 5
    assert (tmp_path / "cache.jsonl.gz").read_bytes() == again.with_name("cache.jsonl.gz").read_bytes()


def test_cache_cli_seals_and_reads_a_sealed_cache(tmp_path, capsys):
    from moeisr.cli import main

    path = tmp_path / "cache.jsonl"
    ResultsCache(path).append([row(0), row(1)])
    assert main(["cache", "seal", str(path)]) == 0 and "2 rows sealed" in capsys.readouterr().out
    assert main(["cache", "info", str(path)]) == 0 and f"{path}: 2 rows" in capsys.readouterr().out
    assert main(["cache", "migrate", str(path)]) == 2  # migration rewrites a plain file only
    assert "no such cache file" in capsys.readouterr().err


def test_export_to_csv(tmp_path):
    cache = ResultsCache(tmp_path / "cache.jsonl")
    cache.append([row(0), row(1, shares=[0.5, 0.25, 0.25])])
    out = cache.to_csv(tmp_path / "tables" / "results.csv")
    frame = pd.read_csv(out)
    assert list(frame.columns) == [*REQUIRED_COLUMNS, "share_0", "share_1", "share_2"]
    assert frame.share_2.isna().tolist() == [True, False]


def test_rows_without_required_columns_are_rejected(tmp_path):
    cache = ResultsCache(tmp_path / "cache.jsonl")
    bad = row(0)
    del bad["psnr"]
    with pytest.raises(ValueError, match="psnr"):
        cache.append([bad])
    assert not (tmp_path / "cache.jsonl").exists()


def test_ckpt_hash_of_a_real_file_matches_its_published_sha256(shared_data):
    sums = dict(line.split()[::-1] for line in (shared_data / "SHA256SUMS").read_text().splitlines())
    image = shared_data / "benchmark" / "Set5" / "HR" / "baby.webp"
    assert ckpt_hash(image) == sums["./benchmark/Set5/HR/baby.webp"][:12]
    assert ckpt_hash(image) == hashlib.sha256(image.read_bytes()).hexdigest()[:12]
    assert ckpt_hash("bicubic") == "bicubic"
    with pytest.raises(UserError, match="checkpoint not found"):
        ckpt_hash(shared_data / "no-such.pt")


# -------------------------------------------------------------------------------- real processes

# Appends the rows of a fixed grid that the cache lacks, one row per append, as an evaluator does.
# Rows carry a 4 KB payload so that a kill lands mid-write now and then, and so that unserialised
# writers would interleave.
APPENDER = textwrap.dedent(
    """
    import sys
    from moeisr.evaluate.cache import ResultsCache
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache = ResultsCache(path)
    grid = [(tag, "Set5", f"img_{i:04d}", "h", 4.0, None, "benchmark", 1, "fp32") for i in range(n)]
    for key in cache.missing(grid):
        i = int(key.image[4:])
        cache.append([{
            "model": "liif", "run_id": tag, "ckpt_hash": tag, "dataset": "Set5", "image": key.image,
            "image_hash": "h", "scale": 4.0, "knob": None, "protocol": "benchmark", "protocol_version": 1,
            "precision": "fp32", "psnr": i / 10, "ssim": 0.5, "lpips": 0.1,
            "gflops": 1.0, "seconds": 0.01, "commit": "c", "profile": "smoke", "pad": tag * 4096,
        }])
    """
)


def start_appender(path: Path, tag: str, n: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", APPENDER, str(path), tag, str(n)], stderr=subprocess.PIPE)


def assert_rows_valid(path: Path, frame: pd.DataFrame) -> None:
    assert not frame.duplicated(["ckpt_hash", "image"]).any()
    assert (frame.psnr == frame.image.str[4:].astype(int) / 10).all()
    assert (frame.pad == frame.ckpt_hash * 4096).all()


def test_kill_9_mid_run_loses_no_written_row_and_a_rerun_completes_without_duplicates(tmp_path):
    path = tmp_path / "cache.jsonl"
    n = 1000  # far more than it writes before the kill, even on a fast disk
    writer = start_appender(path, "A", n)
    try:
        while writer.poll() is None and (not path.exists() or path.read_bytes().count(b"\n") < 50):
            time.sleep(0.01)  # let it write some rows
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == -signal.SIGKILL, "the appender finished before it could be killed"

    raw = path.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1].splitlines()
    assert all(json.loads(line) for line in complete)  # every complete line is a valid row
    frame = ResultsCache(path).load()
    assert len(frame) == len(complete) >= 50
    assert_rows_valid(path, frame)

    rerun = start_appender(path, "A", n)
    assert rerun.wait() == 0, rerun.stderr.read().decode()
    lines = path.read_bytes().splitlines()
    assert len(lines) == n  # the rerun wrote only the missing rows and cut any truncated tail
    frame = ResultsCache(path).load()
    assert sorted(frame.image) == [f"img_{i:04d}" for i in range(n)]
    assert_rows_valid(path, frame)


def test_concurrent_appenders_lose_and_interleave_nothing(tmp_path):
    path = tmp_path / "cache.jsonl"
    n = 150
    writers = [start_appender(path, tag, n) for tag in ("A", "B")]
    for writer in writers:
        assert writer.wait() == 0, writer.stderr.read().decode()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 2 * n
    parsed = [json.loads(line) for line in lines]  # an interleaved line would not parse
    assert {r["run_id"] for r in parsed} == {"A", "B"}
    frame = ResultsCache(path).load()
    assert len(frame) == 2 * n
    assert_rows_valid(path, frame)
