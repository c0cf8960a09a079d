"""One `upscale` in a fresh interpreter, for an independent peak-RSS measurement (run by the suite).

    python bench/memcase.py MODEL (--image DATASET:NAME | --largest DATASET | --lr-size N) --scale S
                            [--path as_executed|as_published] [--routing cheapest|budget60|argmax|deepest]
                            [--threads N] [--tile N|none]

MODEL: liif, lte, moeisr-liif, moeisr-lte (EDSR-baseline encoder), liif-rdn, lte-rdn (RDN, config B).
--tile sets `encode_tile_size` (default: the model's, ENCODE_TILE_SIZE; "none" encodes untiled).
Prints one JSON line: seconds, peak_rss_gb (VmHWM of this process: imports, model, encoder, output,
chunk buffers), rss_before_gb (after building the model and loading the image), sizes, the routing and the
encoder tiles.
"""

from __future__ import annotations

import argparse
import json
import time

import benchlib as B
import torch

from moeisr.models.base import receptive_radius, tile_spans


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--image", help="DATASET:NAME, e.g. Set14:barbara")
    where.add_argument("--largest", help="the largest image of DATASET")
    where.add_argument("--lr-size", type=int, help="a real N×N LR crop (Urban100's largest image)")
    parser.add_argument("--scale", type=float, required=True)
    parser.add_argument("--path", default="as_executed", choices=["as_executed", "as_published"])
    parser.add_argument("--routing", default=None, choices=sorted(B.ROUTINGS))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--tile", default=None, help="encode_tile_size: a side in LR pixels, or none")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, weights = B.build_model(args.model)
    if args.tile is not None:
        model.encode_tile_size = None if args.tile == "none" else int(args.tile)
    backbone = getattr(model, "backbone", model)
    if args.lr_size:
        lr = B.lr_of_size(args.lr_size)
        size = (round(lr.shape[-2] * args.scale), round(lr.shape[-1] * args.scale))
        label = f"Urban100 crop {args.lr_size}x{args.lr_size}"
    else:
        dataset, name = args.image.split(":") if args.image else (args.largest, B.largest_image(args.largest).stem)
        pair = B.pairs(dataset, args.scale, [name])[0]
        lr, size, label = pair.lr, pair.size, f"{dataset}/{name}"
    knob = B.resolve_knob(model, args.routing, lr, size) if args.routing else None
    rss_before = B.peak_rss_gb()
    start = time.perf_counter()
    out = B.run_upscale(model, lr, size, knob, args.path)
    seconds = time.perf_counter() - start
    result = {
        "model": args.model,
        "weights": weights,
        "image": label,
        "scale": args.scale,
        "lr_size": list(lr.shape[-2:]),
        "out_size": list(out.shape[-2:]),
        "path": args.path,
        "routing": args.routing,
        "seconds": seconds,
        "megapixels_per_s": size[0] * size[1] / seconds / 1e6,
        "rss_before_gb": rss_before,
        "peak_rss_gb": B.peak_rss_gb(),
        "threads": torch.get_num_threads(),
        "encoder": backbone.encoder.spec["name"],
        "encode_tile_size": model.encode_tile_size,
        "encoder_tiles": _tiles(backbone, tuple(lr.shape[-2:])),
    }
    print(json.dumps(result))
    return 0


def _tiles(backbone, hw: tuple[int, int]) -> int:
    """How many tiles `encode` cut the LR image into (1: untiled)."""
    tile, radius = backbone.encode_tile_size, receptive_radius(backbone.encoder)
    if tile is None or radius is None or hw[0] * hw[1] <= tile * tile:
        return 1
    return len(tile_spans(hw[0], tile, radius)) * len(tile_spans(hw[1], tile, radius))


if __name__ == "__main__":
    raise SystemExit(main())
