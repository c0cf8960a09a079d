"""End-to-end `upscale` on real images, backbone and MoEISR side by side, and our LIIF against the official path.

A sweep runs, image by image, every variant of one family (the backbone, MoEISR with every pixel on the
cheapest expert, MoEISR at a 60% decoder-MAC budget, and on the executed path the family's LMF model: LM-LIIF
beside LIIF, LM-LTE beside LTE, CMSR off) one after the other, alternating the order from image to image, so
that the ratios compare runs made under the same machine load. The realised speed-up of MoEISR (and LMF) is
compared with its MAC ratio: realised_over_flops = (t_backbone / t_variant) / (F_backbone / F_variant), with
F = encoder + mapper + decoder MACs of the path that ran (bench/benchlib.py: upscale_macs; LMF's decoder is its
latent and render MLPs). LMF has one implementation (`decoder_path` does not change it), so it is left out of
the published-path sweeps.
"""

from __future__ import annotations

import benchlib as B
import pytest
import torch

from moeisr.models.base import using_decoder_path

SWEEPS = [
    # (dataset, scale, image names or None for all / the Set14 option, paths)
    ("Set14", 4, None, ("as_executed",)),
    ("Set14", 2, None, ("as_executed",)),
    ("Set14", 4, ["baboon", "comic", "lenna", "zebra"], ("as_published",)),
    ("Urban100", 4, ["img_011"], ("as_executed", "as_published")),
    ("Set14", 12, ["barbara"], ("as_executed",)),
]
VARIANTS = [(None, None), ("moeisr-", "cheapest"), ("moeisr-", "budget60")]
LMF_VARIANT = ("lm-", None)  # executed-path sweeps only


def _sweep_cases():
    for dataset, scale, names, paths in SWEEPS:
        for path in paths:
            for family in ("liif", "lte"):
                yield pytest.param(dataset, scale, names, path, family, id=f"{family}-{dataset}-x{scale}-{path}")


@pytest.mark.parametrize(("dataset", "scale", "names", "path", "family"), list(_sweep_cases()))
def test_upscale_side_by_side(benchmark, zoo, store, set14_names, dataset, scale, names, path, family):
    if names is None and dataset == "Set14":
        names = set14_names
    images = B.pairs(dataset, scale, names)
    chosen = VARIANTS + ([LMF_VARIANT] if path == "as_executed" else [])
    variants = [((prefix or "") + family, routing) for prefix, routing in chosen]
    knobs = {
        (v, p.name): B.resolve_knob(zoo(v[0]), v[1], p.lr, p.size) for v in variants for p in images
    }  # budget knobs by bisection on each image, before any timing
    totals = {v: {"seconds": 0.0, "megapixels": 0.0, "macs": {}, "counts": None} for v in variants}

    def sweep():
        for i, pair in enumerate(images):
            for variant in variants if i % 2 == 0 else variants[::-1]:
                model, knob = zoo(variant[0]), knobs[variant, pair.name]
                seconds, _ = B.timed(lambda m=model, p=pair, k=knob: B.run_upscale(m, p.lr, p.size, k, path))
                totals[variant]["seconds"] += seconds

    benchmark.pedantic(sweep, rounds=1)

    for variant in variants:
        model = zoo(variant[0])
        macs: dict = {}
        counts = None
        for pair in images:
            m = B.upscale_macs(model, pair.lr, pair.size, knobs[variant, pair.name], path)
            for k, v in m["macs"].items():
                macs[k] = macs.get(k, 0) + v
            counts = m["counts"] if counts is None else [a + b for a, b in zip(counts, m["counts"], strict=True)]
            totals[variant]["megapixels"] += pair.size[0] * pair.size[1] / 1e6
        totals[variant]["macs"] = macs
        totals[variant]["counts"] = counts
    base = totals[variants[0]]
    for variant in variants:
        t = totals[variant]
        row = {
            "family": family,
            "model": variant[0],
            "routing": variant[1],
            "dataset": dataset,
            "scale": scale,
            "images": [p.name for p in images],
            "path": path,
            "seconds": t["seconds"],
            "megapixels": t["megapixels"],
            "megapixels_per_s": t["megapixels"] / t["seconds"],
            "macs": t["macs"],
            "total_macs": sum(t["macs"].values()),
            "expert_counts": t["counts"],
            "threads": torch.get_num_threads(),
        }
        if variant != variants[0]:
            speedup = base["seconds"] / t["seconds"]
            flop_ratio = sum(base["macs"].values()) / row["total_macs"]
            row.update(speedup=speedup, flop_ratio=flop_ratio, realised_over_flops=speedup / flop_ratio)
        store.upscale.append(row)
        benchmark.extra_info[f"{variant[0]}:{variant[1]}"] = {
            k: row[k] for k in ("seconds", "megapixels_per_s", "total_macs") if k in row
        } | ({"realised_over_flops": row["realised_over_flops"]} if "realised_over_flops" in row else {})


def test_liif_against_official_reference(benchmark, zoo, store):
    """Our default `upscale` (as executed) against bench/reference_paths.py on an Urban100 image at ×4."""
    import reference_paths as R

    model = zoo("liif")
    pair = B.pairs("Urban100", 4, ["img_011"])[0]
    times = {"ours": [], "reference": []}
    outputs = {}

    def both():
        for key, fn in (
            ("ours", lambda: model.upscale(pair.lr, pair.size)),
            ("reference", lambda: R.reference_upscale(model, pair.lr, pair.size)),
        ):
            seconds, outputs[key] = B.timed(fn)
            times[key].append(seconds)

    benchmark.pedantic(both, rounds=2)
    with using_decoder_path(model, "as_published"):
        published = model.upscale(pair.lr, pair.size)
    row = {
        "image": f"Urban100/{pair.name}",
        "scale": 4,
        "out_size": list(pair.size),
        "ours_seconds": min(times["ours"]),
        "reference_seconds": min(times["reference"]),
        "speedup": min(times["reference"]) / min(times["ours"]),
        "max_abs_diff": (outputs["ours"] - outputs["reference"]).abs().max().item(),
        "published_path_max_abs_diff": (published - outputs["reference"]).abs().max().item(),
        "threads": torch.get_num_threads(),
    }
    store.reference.append(row)
    benchmark.extra_info.update(row)
    assert row["max_abs_diff"] <= 1e-5
