"""Decoder query throughput (output megapixels/s) and its fraction of this machine's fp32 matmul peak.

The features are encoded once (not timed); the timed part is `query` over every output pixel of Set14
"comic" at ×4 (89,280 queries) in upscale's chunks: nearest cells, inputs, MLP(s), ensemble blend, and
what the queries build once per image (LIIF's per-LR-pixel projections; LMF's latent MLP, which runs once per
LR pixel at the first query, before its render MLP runs per query). That per-image state is dropped before
every round (`benchlib.PER_IMAGE_DECODER_STATE`), so every round times what one `upscale`'s queries do. The
2048² matmul peak is measured right before every round (pytest-benchmark's untimed `setup`), so the
fraction compares like with like on a shared machine.
"""

from __future__ import annotations

import math

import benchlib as B
import pytest
import torch

from moeisr.models.base import DEFAULT_CHUNK_SIZE, using_decoder_path
from moeisr.models.lmf import LatentModulatedSR
from moeisr.models.moe.moeisr import MoEISR

CASES = [
    ("liif", None, "as_executed"),
    ("liif", None, "as_published"),
    ("lte", None, "as_executed"),
    ("lte", None, "as_published"),
    *[("moeisr-liif", r, "as_executed") for r in ("cheapest", "budget60", "argmax", "deepest")],
    *[("moeisr-liif", r, "as_published") for r in ("cheapest", "budget60")],
    *[("moeisr-lte", r, "as_executed") for r in ("cheapest", "budget60", "argmax", "deepest")],
    # LMF (CMSR off): one implementation, which `upscale` runs; `decoder_path` does not change it
    ("lm-liif", None, "as_executed"),
    ("lm-lte", None, "as_executed"),
]
ROUNDS = 3


@pytest.mark.parametrize(("name", "routing", "path"), CASES, ids=lambda v: str(v))
def test_decoder_throughput(benchmark, zoo, store, name, routing, path):
    model = zoo(name)
    pair = B.pairs("Set14", 4, ["comic"])[0]
    coord, cell, size = B.query_grid(pair.lr, 4)
    assert size == pair.size
    knob = B.resolve_knob(model, routing, pair.lr, size)
    kwargs = {"routing_knob": knob} if isinstance(model, MoEISR) else {}
    n = coord.shape[1]

    with torch.inference_mode(), using_decoder_path(model, path):
        features = model.encode(pair.lr)

        def decode():
            for start in range(0, n, DEFAULT_CHUNK_SIZE):
                stop = min(start + DEFAULT_CHUNK_SIZE, n)
                model.query(features, coord[:, start:stop], cell[:, start:stop], **kwargs)

        peaks: list[float] = []

        def setup():
            for key in B.PER_IMAGE_DECODER_STATE:
                features.pop(key, None)
            peaks.append(B.matmul_peak_gflops())

        benchmark.pedantic(decode, setup=setup, rounds=ROUNDS)

    seconds = benchmark.stats.stats.min
    counts = B.routed_counts(model, pair.lr, size, knob)
    macs = B.decoder_macs(model, counts, tuple(pair.lr.shape[-2:]), path)
    peak = sorted(peaks)[len(peaks) // 2]
    row = {
        "model": name,
        "decoder": B.decoder_part(model),
        "routing": routing,
        "knob": None if knob is None else (knob if math.isfinite(knob) else str(knob)),
        "path": path,
        "queries": n,
        "seconds": seconds,
        "megapixels_per_s": n / seconds / 1e6,
        "decoder_macs": macs,
        "achieved_gflops": 2 * macs / seconds / 1e9,
        "matmul_peak_gflops": peak,
        "peak_fraction": 2 * macs / seconds / 1e9 / peak,
        "expert_counts": counts,
        "threads": torch.get_num_threads(),
    }
    if isinstance(model, LatentModulatedSR):
        row["decoder_macs_parts"] = B.lmf_decoder_macs(model, n, tuple(pair.lr.shape[-2:]))
    store.peaks.extend(peaks)
    store.decoder.append(row)
    benchmark.extra_info.update(row)
