"""The cache key holds everything that changes a number: protocol, image content, metric set, precision, set name.

Each test runs the real grid runner on small crops of real Set5 images written into temporary data roots, and
fails on a key that leaves its field out (a stale row would be returned instead of a recomputed one).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from shared_data import benchmark

from moeisr.data.images import load_image, save_image
from moeisr.errors import UserError
from moeisr.evaluate.cache import ResultsCache, image_hash, migrate_legacy_rows
from moeisr.evaluate.runner import Grid, bicubic_entry, checkpoint_entry, evaluate, grid_keys

REPO = Path(__file__).resolve().parents[1]


def crop_root(tmp_path: Path, name: str, top: int) -> Path:
    """A data root whose Set5 holds 'baby' and 'bird' as 48x48 crops (from row `top`) of the real images."""
    root = tmp_path / name
    folder = root / "benchmark" / "Set5" / "HR"
    folder.mkdir(parents=True)
    for stem in ("baby", "bird"):
        hr = load_image(benchmark("Set5") / "HR" / f"{stem}.webp")
        save_image(hr[:, top : top + 48, 100:148], folder / f"{stem}.png")
    return root


def run(cache, root, entries=None, **options):
    grid = Grid(
        sets=options.pop("sets", ["Set5"]),
        scales=[2.0],
        protocol=options.pop("protocol", "benchmark"),
        precision=options.pop("precision", "fp32"),
    )
    keys, written = evaluate(entries or [bicubic_entry()], grid, cache, root=root, progress=False, **options)
    return cache.select(keys), written


def test_protocol_is_part_of_the_key(tmp_path):
    root, cache = crop_root(tmp_path, "data", 100), ResultsCache(tmp_path / "cache.jsonl")
    div2k, written = run(cache, root, protocol="div2k", with_lpips=False)
    assert written == 2 and set(div2k.protocol) == {"div2k"}
    benchmark, written = run(cache, root, protocol="benchmark", with_lpips=False)
    assert written == 2, "benchmark rows must not be served by the div2k rows"
    assert set(benchmark.protocol) == {"benchmark"}
    assert (benchmark.psnr.to_numpy() != div2k.psnr.to_numpy()).all()  # Y vs RGB, different shave


def test_a_metric_left_out_before_counts_as_missing(tmp_path):
    root, cache = crop_root(tmp_path, "data", 100), ResultsCache(tmp_path / "cache.jsonl")
    partial, written = run(cache, root, with_lpips=False)
    assert written == 2 and partial.lpips.isna().all()
    full, written = run(cache, root, with_lpips=True)
    assert written == 2 and full.lpips.notna().all(), "rows without LPIPS must be recomputed when LPIPS is asked for"
    again, written = run(cache, root, with_lpips=False)
    assert written == 0 and again.lpips.notna().all()  # a full row serves a request for fewer metrics
    assert len(cache.load()) == 2  # readers keep one row per key


def test_images_are_keyed_by_content_not_by_name(tmp_path):
    cache = ResultsCache(tmp_path / "cache.jsonl")
    first, _ = run(cache, crop_root(tmp_path, "a", 100), with_lpips=False)
    other_root = crop_root(tmp_path, "b", 200)  # same file names, other pixels
    second, written = run(cache, other_root, with_lpips=False)
    assert written == 2, "a different data root with the same file names must not reuse the rows"
    assert set(first.image) == set(second.image) and (first.psnr.to_numpy() != second.psnr.to_numpy()).all()
    assert set(second.image_hash) == {image_hash(p) for p in (other_root / "benchmark/Set5/HR").iterdir()}


def test_set_names_are_canonical(tmp_path):
    root, cache = crop_root(tmp_path, "data", 100), ResultsCache(tmp_path / "cache.jsonl")
    run(cache, root, with_lpips=False, sets=["Set5"])
    rows, written = run(cache, root, with_lpips=False, sets=["set5"])
    assert written == 0 and set(rows.dataset) == {"Set5"} and len(rows) == 2


@pytest.mark.slow
def test_precision_is_part_of_the_key(tmp_path):
    root, cache = crop_root(tmp_path, "data", 100), ResultsCache(tmp_path / "cache.jsonl")
    liif = checkpoint_entry(REPO / "results" / "checkpoints" / "liif.pt")
    fp32, written = run(cache, root, [liif], with_lpips=False)
    assert written == 2 and set(fp32.precision) == {"fp32"}
    bf16, written = run(cache, root, [liif], with_lpips=False, precision="bf16")
    assert written == 2, "bf16 rows must not be served by fp32 rows"
    assert set(bf16.precision) == {"bf16"}
    assert (bf16.psnr.to_numpy() != fp32.psnr.to_numpy()).any()
    assert abs(bf16.psnr.to_numpy() - fp32.psnr.to_numpy()).max() < 0.2


def test_legacy_rows_are_refused_then_migrated_with_their_image_hashes(tmp_path):
    root = crop_root(tmp_path, "data", 100)
    path = tmp_path / "cache.jsonl"
    legacy = {
        "model": "bicubic", "run_id": "", "ckpt_hash": "bicubic", "dataset": "set5", "image": "bird", "scale": 2.0,
        "knob": "none", "protocol_version": 2, "psnr": 30.0, "ssim": 0.9, "lpips": 0.1, "gflops": math.nan,
        "seconds": 0.1, "commit": "c", "profile": "cpu",
    }  # fmt: skip
    orphan = {**legacy, "image": "no-such-image"}
    path.write_text("".join(json.dumps(r) + "\n" for r in (legacy, orphan)))
    with pytest.raises(UserError, match="moeisr cache migrate"):
        ResultsCache(path).load()
    assert migrate_legacy_rows(path, root) == (1, 1)
    (row,) = ResultsCache(path).rows()
    assert row["image_hash"] == image_hash(root / "benchmark/Set5/HR/bird.png")
    assert (row["dataset"], row["protocol"], row["precision"]) == ("Set5", "benchmark", "fp32")
    keys = grid_keys([bicubic_entry()], Grid(sets=["Set5"], scales=[2.0]), root)
    assert ResultsCache(path).missing(keys, ("psnr", "ssim", "lpips")) == [k for k in keys if k.image == "baby"]


def test_the_committed_cache_is_in_the_current_format():
    cache = ResultsCache(REPO / "runs" / "cache" / "cpu" / "results.jsonl")
    assert cache.sealed_path.is_file()  # committed sealed (gzip), under the repository's 5 MB per file
    frame = cache.load()
    assert len(frame) > 4000 and frame.image_hash.str.fullmatch(r"[0-9a-f]{12}").all()
    baby = benchmark("Set5") / "HR" / "baby.webp"
    assert set(frame[(frame.dataset == "Set5") & (frame.image == "baby")].image_hash) == {image_hash(baby)}
    assert torch.is_tensor(load_image(baby))
