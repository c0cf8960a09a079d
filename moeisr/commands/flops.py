"""`moeisr flops (CKPT|SPEC.yaml) --lr-size WxH --scale S [--image LR.png] [--routing-knob V] [--json]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moeisr.commands.arguments import SIZE_ORDER_HELP, parse_scale_text, parse_size
from moeisr.commands.checkpoints import SHORT_NAME_HELP, resolve_checkpoint
from moeisr.commands.sr import add_budget_arguments, check_request
from moeisr.errors import UserError

SPEC_SUFFIXES = (".yaml", ".yml")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "flops",
        help="count the FLOPs of super-resolving one image (fvcore, 1 MAC = 1 FLOP)",
        description=(
            "Count the FLOPs of model.upscale from an LR image of --lr-size to round(scale x size) with fvcore, "
            "on the real forward path, split into encoder, mapper, decoder and other (see docs/flops.md). "
            "MoEISR's count follows its routing on --image; without an image only --routing-knob=inf / "
            "--routing-knob=-inf (all cheapest / all deepest) are defined."
        ),
    )
    parser.add_argument(
        "source",
        metavar="CKPT|SPEC.yaml",
        help=f"checkpoint .pt/.pth, model spec or experiment .yaml; a checkpoint may be {SHORT_NAME_HELP}",
    )
    parser.add_argument(
        "--lr-size", metavar="WxH", help=f"LR size, {SIZE_ORDER_HELP}, e.g. 125x180; default: --image's"
    )
    parser.add_argument(
        "--scale", required=True, help="upscaling factor >= 1 (4, 3.7, x4 or 4x); output is round(w*s) x round(h*s)"
    )
    parser.add_argument("--image", metavar="LR.png", help="the LR input image (MoEISR routes on it)")
    parser.add_argument(
        "--routing-knob",
        metavar="V",
        help="MoEISR routing knob: a number, inf / cheapest, -inf / deepest (write --routing-knob=-inf)",
    )
    parser.add_argument(
        "--path",
        default="as_published",
        choices=("as_published", "as_executed"),
        help="decoder path to count: the papers' per-query MLP (default) or the exact faster reformulation "
        "that upscale runs (docs/speed.md)",
    )
    parser.add_argument("--profile", default="cpu", help="profile for experiment specs (default: cpu)")
    parser.add_argument("--chunk-size", type=int, default=None, help="output pixels per query chunk (as upscale)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default: cpu)")
    add_budget_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from moeisr.flops import count, format_report
    from moeisr.flops.source import load_source, parse_knob
    from moeisr.models.base import DEFAULT_CHUNK_SIZE, output_size, using_decoder_path

    scale = parse_scale_text(args.scale)
    lr_size = parse_size("--lr-size", args.lr_size, "125x180") if args.lr_size is not None else None
    knob = parse_knob(args.routing_knob) if args.routing_knob is not None else None
    if lr_size is None and args.image is None:
        raise UserError("pass --lr-size WxH (width x height, e.g. 125x180) or an LR --image")
    chunk_size = args.chunk_size if args.chunk_size is not None else DEFAULT_CHUNK_SIZE
    if chunk_size < 1:
        raise UserError(f"--chunk-size must be a positive integer, got {chunk_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA device is available; use --device cpu")
    image = None
    if args.image is not None:
        from moeisr.data.images import load_image

        if not Path(args.image).is_file():
            raise UserError(f"input image {args.image} does not exist")
        image = load_image(args.image)
        check_same_size(lr_size, tuple(image.shape[-2:]), args.image)
    lr_hw = tuple(image.shape[-2:]) if image is not None else lr_size
    source = f"input {args.image}" if image is not None else "the LR size (--lr-size)"
    # the same limits as `moeisr sr`: a count is a full forward pass at the output size
    check_request(source, lr_hw, output_size(lr_hw, scale), args.max_pixels, args.force)
    source_path = args.source
    if Path(args.source).suffix.lower() not in SPEC_SUFFIXES:
        source_path = resolve_checkpoint(args.source)
    model, trained = load_source(source_path, profile=args.profile, device=args.device)
    with using_decoder_path(model, args.path):
        report = count(model, lr_size, scale, image=image, routing_knob=knob, chunk_size=chunk_size)
    if args.json:
        print(json.dumps({"source": str(args.source), "trained": trained, **report.to_dict()}, indent=2))
    else:
        title = f"{Path(source_path).name} ({report.model}{'' if trained else ', untrained: random weights'})"
        print(format_report(report, title=title))
    return 0


def check_same_size(lr_size: tuple[int, int] | None, image_hw: tuple[int, int], image: str) -> None:
    """UserError unless --lr-size (H, W) is absent or equals --image's size; says so when it is the image's size
    in the other order (--lr-size is width x height)."""
    if lr_size is None or lr_size == image_hw:
        return
    (h, w), (ih, iw) = lr_size, image_hw
    hint = ""
    if (w, h) == (ih, iw):
        hint = f" (--lr-size is width x height: {iw}x{ih} is the image's size)"
    raise UserError(f"--lr-size {w}x{h} does not match --image {image}, which is {iw}x{ih}{hint}; drop one of them")
