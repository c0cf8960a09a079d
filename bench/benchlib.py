"""Shared pieces of the speed suite (bench/): models, real images, MAC counts, timers, the results store.

bench/ is not a package: pytest puts this folder on sys.path, and `memcase.py` imports this file the same
way. Everything here is deterministic (seeded weights, fixed image lists) so two runs time the same work.
"""

from __future__ import annotations

import copy
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import moeisr.models  # noqa: F401  (registers the models)
from moeisr.config import read_yaml
from moeisr.coords import make_cell, make_coord
from moeisr.data import degrade, list_images, load_image
from moeisr.data.images import image_size
from moeisr.flops import closed_form as cf
from moeisr.models.base import prepare_for_inference, using_decoder_path
from moeisr.models.checkpoint import load_model, read_checkpoint
from moeisr.models.lmf import LatentModulatedSR
from moeisr.models.lmf.common import LATENT_KEY
from moeisr.models.moe.experts import linear_layers, linear_macs
from moeisr.models.moe.moeisr import MoEISR, init_from_backbone
from moeisr.registry import models

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
RESULTS = Path(os.environ.get("MOEISR_BENCH_OUT", REPO / "results" / "bench"))
# Opt-in only: the default is the paper's full-size models with seeded random weights, so the committed cpu
# checkpoints (a shrunk encoder) never change what the suite measures behind the user's back.
CHECKPOINTS = Path(os.environ["MOEISR_BENCH_CHECKPOINTS"]) if os.environ.get("MOEISR_BENCH_CHECKPOINTS") else None
SEED = 0

ENCODER = {"name": "edsr-baseline", "args": {"n_resblocks": 16, "n_feats": 64, "no_upsampling": True}}
# the paper's RDN encoder (config B: G0=64, D=16 blocks, C=8 convs, G=64), for the full-size memory cases
RDN_ENCODER = {"name": "rdn", "args": {"G0": 64, "RDNconfig": "B", "no_upsampling": True}}
BACKBONE_SPECS = {
    "liif": {
        "name": "liif",
        "args": {
            "encoder_spec": ENCODER,
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256] * 4}},
        },
    },
    "lte": {
        "name": "lte",
        "args": {
            "encoder_spec": ENCODER,
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256] * 3}},
            "hidden_dim": 256,
        },
    },
}
# the same backbones on RDN: "liif-rdn", "lte-rdn"
BACKBONE_SPECS.update(
    {
        f"{name}-rdn": {"name": spec["name"], "args": {**spec["args"], "encoder_spec": RDN_ENCODER}}
        for name, spec in list(BACKBONE_SPECS.items())
    }
)
# LMF (He and Jin, CVPR 2024): name -> (its experiment, the backbone it is timed beside). The model is the
# experiment's paper-size one (experiments/lm_*.yaml without a profile: the official EDSR-baseline config) on
# the encoder of that backbone, with CMSR off (`cmsr_mse` None): its speed then does not depend on the weights.
LMF_MODELS = {"lm-liif": ("lm_liif", "liif"), "lm-lte": ("lm_lte", "lte")}
# What `query` builds per image and keeps in the features dict (LIIF's per-LR-pixel projections and the
# decoders' reused buffers; LMF's latent MLP output). The decoder rows drop it before every round, so that every
# round times what the queries of one `upscale` do. MoEISR's cached mapper logits ("moe_logits") are kept: the
# mapper is not part of the decoder.
PER_IMAGE_DECODER_STATE = ("inference_cache", LATENT_KEY)
# MoEISR routing settings timed by the suite. An untrained mapper's argmax is arbitrary, so the ratios use
# settings whose expert mix is known: all pixels to the cheapest expert, or a knob chosen per image by
# bisection so that the decoder spends 60% of the all-deepest MACs (the realised mix is recorded).
ROUTINGS = {"cheapest": math.inf, "budget60": 0.6, "argmax": 0.0, "deepest": -math.inf}


# ------------------------------------------------------------------------------------------------ models


def _checkpoint_for(name: str) -> Path | None:
    if CHECKPOINTS is None:
        return None
    family = name.removeprefix("moeisr_").removeprefix("lm_")
    if not all(_find_checkpoint(n) for n in {family, f"moeisr_{family}", name}):
        # a backbone and its MoEISR (and LMF) are compared side by side: trained weights only as a matched set
        return None
    return _find_checkpoint(name)


def _find_checkpoint(name: str) -> Path | None:
    for candidate in (f"{name}.pth", f"{name}.pt", f"{name}/final.pt", f"{name}/final.pth"):
        path = CHECKPOINTS / candidate
        if path.is_file():
            return path
    return None


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def lmf_spec(name: str, encoder_spec: dict | None = None) -> dict:
    """The model spec of LMF model `name` ("lm-liif", "lm-lte"): its experiment's paper-size model, on
    `encoder_spec` (default: the backbones' EDSR-baseline, `ENCODER`)."""
    experiment, _ = LMF_MODELS[name]
    spec = copy.deepcopy(read_yaml(REPO / "experiments" / f"{experiment}.yaml")["model"])
    spec["args"]["encoder_spec"] = copy.deepcopy(ENCODER if encoder_spec is None else encoder_spec)
    return spec


def _build_lmf(name: str, ckpt: Path | None) -> tuple[nn.Module, str]:
    """LM-LIIF / LM-LTE with CMSR off: trained from `ckpt`, else seeded random weights on the encoder of the
    backbone it is timed beside (that backbone's checkpoint's encoder when the backbone is trained, so that both
    sides of the ratio have one encoder)."""
    if ckpt is not None:
        model, weights = load_model(ckpt), _shown(ckpt)
    else:
        backbone_ckpt = _checkpoint_for(LMF_MODELS[name][1])
        encoder_spec = (
            None if backbone_ckpt is None else read_checkpoint(backbone_ckpt)["model"]["args"]["encoder_spec"]
        )
        torch.manual_seed(SEED)
        model = models.make(lmf_spec(name, encoder_spec))
        weights = f"random (seed {SEED})" + ("" if backbone_ckpt is None else f", encoder of {_shown(backbone_ckpt)}")
    model.cmsr_mse = None  # a bundle's cmsr_spec may switch CMSR on; off, its output and speed are the official
    return prepare_for_inference(model), f"{weights}, CMSR off"


def build_model(name: str) -> tuple[nn.Module, str]:
    """A full-size model by name ("liif", "lte", "moeisr-liif", "moeisr-lte", "lm-liif", "lm-lte"; "liif-rdn",
    "lte-rdn" with the RDN encoder) and where its weights came from.

    With MOEISR_BENCH_CHECKPOINTS=DIR, trained checkpoints there (liif.pt, moeisr_liif.pt, ...) are used when
    both the backbone and its MoEISR are present (an LMF model's, lm_liif.pt or lm_lte.pt, when its backbone's
    pair is used too); otherwise seeded random weights (fine for timing; MoEISR then starts from the random
    backbone so that its deepest expert equals the backbone MLP; LMF: `_build_lmf`). Returned in eval mode
    with channels-last convolutions.
    """
    ckpt = _checkpoint_for(name.replace("-", "_"))
    if name in LMF_MODELS:
        return _build_lmf(name, ckpt)
    if ckpt is not None:
        return prepare_for_inference(load_model(ckpt)), _shown(ckpt)
    torch.manual_seed(SEED)
    family = name.removeprefix("moeisr-")
    backbone = models.make(BACKBONE_SPECS[family])
    if not name.startswith("moeisr-"):
        return prepare_for_inference(backbone), f"random (seed {SEED})"
    torch.manual_seed(SEED + 1)
    moe = models.make({"name": "moeisr", "args": {"backbone_spec": BACKBONE_SPECS[family]}})
    init_from_backbone(moe, backbone)
    return prepare_for_inference(moe), f"random (seed {SEED}), deepest expert = backbone MLP"


# ------------------------------------------------------------------------------------------------ images


@dataclass
class Pair:
    """A real LR input, its output size and ground truth: lr 1×3×h×w in [0, 1] (MATLAB bicubic, 8-bit),
    size (H, W), hr 1×3×H×W."""

    name: str
    lr: torch.Tensor
    size: tuple[int, int]
    hr: torch.Tensor


def pairs(dataset: str, scale: float, names: Iterable[str] | None = None) -> list[Pair]:
    """LR/size pairs of a benchmark set at `scale` (all images, or the files named in `names`)."""
    files = list_images(dataset)
    if names is not None:
        wanted = set(names)
        files = [f for f in files if f.stem in wanted]
    out = []
    for f in files:
        hr, lr = degrade(load_image(f), scale)
        out.append(Pair(f.stem, lr.unsqueeze(0).contiguous(), tuple(hr.shape[-2:]), hr.unsqueeze(0)))
    return out


def largest_image(dataset: str) -> Path:
    """The file with the most pixels in a benchmark set (first by name on ties)."""
    return max(list_images(dataset), key=lambda f: math.prod(image_size(f)))  # max keeps the first on ties


def lr_of_size(size: int) -> torch.Tensor:
    """A real size×size LR input: the centre crop of the largest Urban100 image, bicubic-downscaled by 2
    first when that leaves enough pixels (the content of a real photo at LR statistics). No stored image has
    1024 pixels on both sides (Urban100's largest is 960×1280): the short side is then mirrored out to `size`
    (time and memory of LIIF/LTE do not depend on the content)."""
    hr = load_image(largest_image("Urban100"))
    _, lr = degrade(hr, 2)
    h, w = lr.shape[-2:]
    if min(h, w) < size:
        lr = hr
        h, w = lr.shape[-2:]
    if min(h, w) < size:
        pad_h, pad_w = max(size - h, 0), max(size - w, 0)
        pads = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
        lr = torch.nn.functional.pad(lr.unsqueeze(0), pads, mode="reflect")[0]
        h, w = lr.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return lr[:, top : top + size, left : left + size].unsqueeze(0).contiguous()


def query_grid(lr: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """All output coordinates and cells of `lr` at `scale`: coord, cell 1×Q×2, and the output size."""
    size = (round(lr.shape[-2] * scale), round(lr.shape[-1] * scale))
    coord = make_coord(size).unsqueeze(0)
    return coord, make_cell(coord, size), size


# ------------------------------------------------------------------------------------------------ MACs


def encoder_macs(model: nn.Module, h: int, w: int) -> int:
    """EDSR / RDN encoder convolution MACs (closed form of moeisr.flops), plus (LM-)LTE's coef/freq convs."""
    backbone = model.backbone if isinstance(model, MoEISR) else model
    encoder = backbone.encoder
    if encoder.spec["name"] == "rdn":
        rdn = {"G0": encoder.out_dim, "D": len(encoder.RDBs), "C": len(encoder.RDBs[0].convs)}
        macs = cf.rdn_encoder(h, w, **rdn, G=encoder.RDBs[0].convs[0].conv[0].out_channels)
    else:
        args = encoder.spec["args"]
        macs = cf.edsr_encoder(h, w, n_resblocks=args["n_resblocks"], n_feats=args["n_feats"])
    if backbone.spec["name"] in ("lte", "lm-lte"):
        macs += 2 * cf.conv_macs(h, w, encoder.out_dim, backbone.hidden_dim)
    return macs


def mapper_macs(model: nn.Module, h: int, w: int) -> int:
    return model.mapper_macs((h, w)) if isinstance(model, MoEISR) else 0


def _mlps(model: nn.Module) -> list[nn.Module]:
    return list(model.experts) if isinstance(model, MoEISR) else [model.imnet]


def _is_liif(model: nn.Module) -> bool:
    backbone = model.backbone if isinstance(model, MoEISR) else model
    return backbone.spec["name"] == "liif"


def lmf_decoder_macs(model: LatentModulatedSR, queries: int, lr_hw: tuple[int, int], ensemble: int = 4) -> dict:
    """LMF's decoder MACs by part: "latent", the latent MLP once per LR pixel (h·w · Σ in·out), and "render",
    the render MLP once per query and local-ensemble shift (queries · K · Σ in·out). Linear layers only: the
    modulations' multiply and add (element-wise) are not counted, as no element-wise work is here. LMF has one
    implementation, so both paths have these MACs."""
    k = ensemble if model.local_ensemble else 1
    return {
        "latent": lr_hw[0] * lr_hw[1] * linear_macs(model.hypernet),
        "render": queries * k * linear_macs(model.imnet),
    }


def decoder_macs(model: nn.Module, counts: list[int], lr_hw: tuple[int, int], path: str, ensemble: int = 4) -> int:
    """MLP MACs for `counts[j]` output pixels decoded by MLP j (K = `ensemble` inputs each).

    as_published: K · Σ in·out per pixel. as_executed (LIIF family): the first layer's feature part once per
    LR pixel for every MLP that decodes a pixel (h·w·F·out), then per input only the tail columns
    (rel_coord, cell) and the later layers. LTE's executed path has the published MACs. LMF: the latent and
    render MLPs (`lmf_decoder_macs`).
    """
    if isinstance(model, LatentModulatedSR):
        return sum(lmf_decoder_macs(model, counts[0], lr_hw, ensemble).values())
    total = 0
    for mlp, n in zip(_mlps(model), counts, strict=True):
        layers = linear_layers(mlp)
        if path == "as_published" or not _is_liif(model):
            total += n * ensemble * sum(layer.in_features * layer.out_features for layer in layers)
            continue
        if n == 0:
            continue
        backbone = model.backbone if isinstance(model, MoEISR) else model
        n_tail = 2 + (2 if backbone.cell_decode else 0)
        first = layers[0]
        total += lr_hw[0] * lr_hw[1] * (first.in_features - n_tail) * first.out_features
        per_input = n_tail * first.out_features + sum(layer.in_features * layer.out_features for layer in layers[1:])
        total += n * ensemble * per_input
    return total


def decoder_part(model: nn.Module) -> str:
    """What a decoder row of `model` times (bench.md's `decoder` column)."""
    if isinstance(model, LatentModulatedSR):
        return "latent MLP (per LR pixel) + render MLP (per query)"
    return "experts (per query)" if isinstance(model, MoEISR) else "MLP (per query)"


def routed_counts(model: nn.Module, lr: torch.Tensor, size: tuple[int, int], knob: float | None) -> list[int]:
    """Output pixels per MLP: everything to the single MLP, or MoEISR's routing at `knob`."""
    if not isinstance(model, MoEISR):
        return [size[0] * size[1]]
    expert_map = model.expert_map(lr, size, routing_knob=knob)
    return torch.bincount(expert_map.reshape(-1), minlength=model.n_experts).tolist()


def resolve_knob(model: nn.Module, routing: str | None, lr: torch.Tensor, size: tuple[int, int]) -> float | None:
    """The routing knob of a named setting for this image (None for single-MLP models)."""
    if not isinstance(model, MoEISR) or routing is None:
        return None
    value = ROUTINGS[routing]
    if routing.startswith("budget"):
        return model.knob_for_budget(lr, size, value)
    return value


def upscale_macs(model: nn.Module, lr: torch.Tensor, size: tuple[int, int], knob: float | None, path: str) -> dict:
    """MACs of one `upscale` by component (encoder, mapper, decoder) and the routed pixel counts."""
    h, w = lr.shape[-2:]
    counts = routed_counts(model, lr, size, knob)
    parts = {
        "encoder": encoder_macs(model, h, w),
        "mapper": mapper_macs(model, h, w),
        "decoder": decoder_macs(model, counts, (h, w), path),
    }
    return {"macs": parts, "total_macs": sum(parts.values()), "counts": counts}


# ------------------------------------------------------------------------------------------------ timing


def matmul_peak_gflops(n: int = 2048, repeats: int = 3) -> float:
    """fp32 matmul throughput of this machine now, 2·n³ FLOPs per n×n product (best of `repeats`)."""
    g = torch.Generator().manual_seed(SEED)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run_upscale(model: nn.Module, lr: torch.Tensor, size: tuple[int, int], knob: float | None, path: str):
    """`upscale` on the given decoder path ("as_executed" is the default of `upscale`)."""
    kwargs = {"routing_knob": knob} if isinstance(model, MoEISR) else {}
    with using_decoder_path(model, path):
        return model.upscale(lr, size, **kwargs)


def peak_rss_gb() -> float:
    """This process's peak resident set size so far, in GB: VmHWM from /proc/self/status on Linux.

    Not ru_maxrss: Linux carries the parent's high-water mark over fork + exec into ru_maxrss, so a
    subprocess started from a big pytest process would report at least the parent's RSS.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def memory_case(args: list[str], timeout: float = 4 * 3600) -> dict:
    """Run bench/memcase.py with `args` in a fresh interpreter (its own peak RSS) with this process's thread
    count; returns its JSON result."""
    cmd = [sys.executable, str(BENCH_DIR / "memcase.py"), *args, "--threads", str(torch.get_num_threads())]
    env = {**os.environ, "PYTHONPATH": str(BENCH_DIR) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memcase {args} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------ results


@dataclass
class Store:
    """Everything the suite measured, written at the end of the session (conftest.py → report.py)."""

    machine: dict = field(default_factory=dict)
    peaks: list[float] = field(default_factory=list)
    decoder: list[dict] = field(default_factory=list)
    upscale: list[dict] = field(default_factory=list)
    reference: list[dict] = field(default_factory=list)
    overheads: list[dict] = field(default_factory=list)
    memory: list[dict] = field(default_factory=list)
    experiments: list[dict] = field(default_factory=list)
    weights: dict = field(default_factory=dict)
