"""Figures for REPORT.md (matplotlib's Agg canvas, seaborn styling; no pyplot, so no global figure state).

Plotting functions take tidy rows or the pictures the pipeline decoded and wrote (`read_expert_maps`, `read_crops`;
`moeisr.pipeline.pictures` makes them) and write one PNG each, atomically. Nothing here runs a model.
"""

from __future__ import annotations

import functools
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from moeisr.evaluate.pictures import ExpertMapSample, QualitativeCrops, read_crops, read_expert_maps  # noqa: F401
from moeisr.io import atomic_write_bytes
from moeisr.models.moe.colors import COLOR_NAMES, expert_colors
from moeisr.report.tables import FAMILIES, FAMILIES_V1, FAMILIES_V2, MODEL_ORDER, Family, dataset_label, sort_cells

DPI = 110
STYLE = {"bicubic": ("#7f7f7f", "x"), "liif": ("#1f77b4", "o"), "liif-equal-budget": ("#6baed6", "s"),
         "moeisr-liif": ("#08306b", "*"), "lte": ("#d62728", "o"), "lte-equal-budget": ("#fc9272", "s"),
         "moeisr-lte": ("#67000d", "*"), "lm-liif": ("#2ca02c", "P"), "lm-lte": ("#9467bd", "P"),
         "LIIF dense frontier": ("#9ecae1", "."), "LTE dense frontier": ("#fcbba1", "."),
         "liif-d1": ("#9ecae1", "v"), "liif-d2": ("#9ecae1", "<"), "liif-d3": ("#9ecae1", ">"),
         "lte-d1": ("#fcbba1", "v"), "lte-d2": ("#fcbba1", "<")}  # fmt: skip
# recipe v2's models take the colours of the v1 models they replace in the figure
STYLE |= {new: STYLE[old] for v1, v2 in zip(FAMILIES_V1, FAMILIES_V2, strict=True)
          for old, new in ((v1.backbone, v2.backbone), (v1.equal, v2.equal), (v1.moe, v2.moe))}  # fmt: skip


def _style(model: str) -> tuple[str, str]:
    return STYLE.get(model, ("#2ca02c", "D"))


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` as PNG to `path` atomically, with the permissions a plain `open()` would give it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def styled(func):
    """Draw under seaborn's whitegrid/paper style, restoring matplotlib's settings afterwards."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
            return func(*args, **kwargs)

    return wrapper


def new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def legend_and_save(fig: Figure, handles: Mapping, title: str, path: str | os.PathLike) -> Path:
    """One legend for all panels at the right of `fig` (label → artist), `title` above; written by `save_figure`."""
    fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def dataset_scale_figure(
    cells: pd.DataFrame,
    panel: Callable[[Axes, pd.DataFrame], Mapping],
    path: str | os.PathLike,
    title: str,
    panel_size: tuple[float, float],
    legend_width: float,
    set_sizes: Mapping[str, int] | None = None,
) -> Path:
    """PSNR vs GFLOPs panels, one per dataset (rows) and scale (columns) of `cells` (columns dataset, scale, n, in
    the order to show), each drawn by `panel(ax, rows of the cell)`, which returns its legend handles (label →
    artist); the axes titled and labelled alike, one legend for all (`legend_and_save`). Call it styled."""
    datasets = list(dict.fromkeys(cells["dataset"]))
    scales = sorted(set(cells["scale"]))
    width, height = panel_size
    fig = new_figure(width * len(scales) + legend_width, height * len(datasets) + 0.6)
    axes = fig.subplots(len(datasets), len(scales), squeeze=False)
    handles = {}
    for i, dataset in enumerate(datasets):
        for j, scale in enumerate(scales):
            ax = axes[i][j]
            cell = cells[(cells["dataset"] == dataset) & (cells["scale"] == scale)]
            if cell.empty:
                ax.set_axis_off()
                continue
            handles.update(panel(ax, cell))
            n = int(cell["n"].max())
            ax.set_title(f"{dataset_label(dataset, n, (set_sizes or {}).get(dataset))} ×{scale:g}", fontsize=8)
            ax.tick_params(labelsize=7)
            if i == len(datasets) - 1:
                ax.set_xlabel("GFLOPs per image (fvcore)", fontsize=7)
            if j == 0:
                ax.set_ylabel("PSNR (dB)", fontsize=7)
    return legend_and_save(fig, handles, title, path)


def _to_numpy(img: torch.Tensor) -> np.ndarray:
    """3×H×W in [0, 1] → H×W×3 float array for imshow."""
    return img.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


# ------------------------------------------------------------------------------------- from rows


@styled
def psnr_vs_gflops(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    set_sizes: Mapping[str, int] | None = None,
    sweep: pd.DataFrame | None = None,
    families: Sequence[Family] = FAMILIES,
) -> Path | None:
    """One panel per dataset (rows) and scale (columns): mean GFLOPs vs mean PSNR, one marker per model.

    Bicubic has no FLOPs count and is drawn as a dashed horizontal line. `sweep`: the ablation suite's
    `sweep_points` (columns family, dataset, scale, router, knob, n, psnr, gflops); each MoEISR model's
    controllable-routing curve (router "learned") is drawn in its panels, but only where it averages the same
    number of images as the model's marker, so that curve and markers describe the same images. Each of
    `families` with dense rows gets its dense frontier. None when there is nothing to plot.
    """
    if frame.empty:
        return None
    means = frame.groupby(["model", "dataset", "scale", "knob"], sort=False).agg(
        psnr=("psnr", "mean"), gflops=("gflops", "mean"), n=("psnr", "size")
    )
    means = sort_cells(means.reset_index())
    rank = {m: i for i, m in enumerate(MODEL_ORDER)}
    means = means.sort_values("model", key=lambda c: c.map(lambda m: rank.get(m, len(rank))), kind="stable")
    means["curve"] = means["knob"].astype(str) != "none"  # a compute-knob sweep in the grid (LMF's CMSR)
    swept = means[means["curve"]][["model", "dataset", "scale"]].drop_duplicates()
    anchors = means[~means["curve"]].merge(swept, on=["model", "dataset", "scale"])  # the default ends the line
    frontiers = _dense_frontiers(means, families)
    curves = pd.concat([_matching_sweep(means, sweep), anchors.assign(curve=True), frontiers], ignore_index=True)
    title = "PSNR vs GFLOPs (means per image; GFLOPs, fvcore: 1 MAC = 1 FLOP)"
    if not curves.empty:
        # an empty part (no ablation sweep) makes pandas 3 concatenate "curve" as object: keep it boolean
        means = pd.concat([means, curves], ignore_index=True).astype({"curve": bool})
        sweeps = len(curves) > len(frontiers)
        title += "; lines: " + " and ".join(
            ([] if frontiers.empty else ["dense frontiers"]) + (["compute-knob sweeps"] if sweeps else [])
        )
    return dataset_scale_figure(
        means, _model_markers, path, title, panel_size=(2.4, 2.2), legend_width=1.6, set_sizes=set_sizes
    )


def _dense_frontiers(means: pd.DataFrame, families: Sequence[Family] = FAMILIES) -> pd.DataFrame:
    """Per family and cell where every frontier model (`Family.frontier`) has a default mean: those means as one
    curve, model "<label> dense frontier"."""
    default = means[means["knob"].astype(str) == "none"]
    parts = []
    for family in families:
        if not family.dense:
            continue
        rows = default[default["model"].isin(family.frontier)]
        complete = rows.groupby(["dataset", "scale"])["model"].transform("nunique") == len(family.frontier)
        parts.append(rows[complete].assign(model=f"{family.label} dense frontier", curve=True))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=means.columns)


def _matching_sweep(means: pd.DataFrame, sweep: pd.DataFrame | None) -> pd.DataFrame:
    """The learned-routing sweep points of `sweep` whose (model, dataset, scale) cell averages as many images as
    the model's row in `means`, as rows of `means` (model = the sweep's family) with curve=True."""
    columns = ["model", "dataset", "scale", "knob", "psnr", "gflops", "n", "curve"]
    if sweep is None or sweep.empty:
        return pd.DataFrame(columns=columns)
    learned = sweep[sweep["router"] == "learned"].rename(columns={"family": "model"})
    markers = means[means["knob"] == "none"].set_index(["model", "dataset", "scale"])["n"]
    keys = list(zip(learned["model"], learned["dataset"], learned["scale"].astype(float), strict=True))
    same = [markers.get(key) == n for key, n in zip(keys, learned["n"], strict=True)]
    return learned[same].assign(curve=True)[columns].reset_index(drop=True)


def _model_markers(ax: Axes, cell: pd.DataFrame) -> dict:
    """One marker per model of a cell's means (bicubic, without FLOPs, as a dashed line), and a line per
    controllable-routing sweep (rows with curve=True); the legend handles."""
    handles = {}
    for model, curve in cell[cell["curve"]].groupby("model", sort=False):
        color, _ = _style(model)
        if model.endswith("dense frontier"):
            label = model
        else:
            label = f"{model}, {'CMSR' if model.startswith('lm-') else 'routing-knob'} sweep"
        curve = curve.sort_values("gflops")
        (handles[label],) = ax.plot(
            curve["gflops"], curve["psnr"], color=color, linewidth=1, marker=".", markersize=3, alpha=0.8, label=label
        )
    for _, r in cell[~cell["curve"]].iterrows():
        color, marker = _style(r["model"])
        label = r["model"] if r["knob"] == "none" else f"{r['model']} (knob {r['knob']})"
        if math.isnan(r["gflops"]):
            handles[label] = ax.axhline(r["psnr"], color=color, linestyle="--", linewidth=1, label=label)
        else:
            handles[label] = ax.scatter(
                r["gflops"], r["psnr"], color=color, marker=marker, s=70 if marker == "*" else 36, label=label,
                zorder=3,
            )  # fmt: skip
    return handles


@styled
def flops_distribution(
    frame: pd.DataFrame, path: str | os.PathLike, families: Sequence[Family] = FAMILIES
) -> Path | None:
    """Per-image FLOPs of each MoEISR model as % of its backbone's FLOPs on the same image and scale.

    One panel per dataset, scales on x, one box per MoEISR model. The backbone's FLOPs depend only on the image
    size; MoEISR's also on the routing, so the spread is the routing's per-image adaptivity.
    """
    parts = []
    for family in families:
        moe = frame[frame["model"] == family.moe][["dataset", "image", "scale", "knob", "gflops"]]
        base = frame[frame["model"] == family.backbone][["dataset", "image", "scale", "gflops"]]
        merged = moe.merge(base, on=["dataset", "image", "scale"], suffixes=("", "_backbone"))
        if merged.empty:
            continue
        merged["relative"] = 100.0 * merged["gflops"] / merged["gflops_backbone"]
        merged["model"] = family.moe
        parts.append(merged)
    if not parts:
        return None
    data = sort_cells(pd.concat(parts, ignore_index=True).dropna(subset=["relative"]))
    if data.empty:
        return None
    data["scale label"] = data["scale"].map(lambda s: f"×{s:g}")
    datasets = list(dict.fromkeys(data["dataset"]))
    fig = new_figure(3.4 * len(datasets) + 0.8, 3.2)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    palette = {f.moe: _style(f.moe)[0] for f in families}
    for ax, dataset in zip(axes, datasets, strict=True):
        part = data[data["dataset"] == dataset]
        sns.boxplot(
            data=part, x="scale label", y="relative", hue="model", palette=palette, ax=ax, fliersize=2, linewidth=0.8
        )
        ax.axhline(100.0, color="#444444", linestyle=":", linewidth=1)
        ax.set_title(f"{dataset} ({part['image'].nunique()} images)", fontsize=8)
        ax.set_xlabel("scale", fontsize=7)
        ax.set_ylabel("FLOPs per image, % of the backbone's", fontsize=7)
        ax.tick_params(labelsize=7)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    handles, labels = axes[0].get_legend_handles_labels()
    # one legend beside the panels: inside one, it hid that panel's boxes
    fig.legend(
        handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title="model", title_fontsize=7
    )
    fig.suptitle("Distribution of per-image FLOPs: MoEISR relative to its backbone (100% = same FLOPs)", fontsize=9)
    return save_figure(fig, path)


@styled
def learning_curves(
    logs: Mapping[str, pd.DataFrame],
    offsets: Mapping[str, int],
    path: str | os.PathLike,
    validation: Mapping[str, str | None] | None = None,
) -> Path | None:
    """Training L1 (left) and validation PSNR (right, if any run validated) against the global step.

    logs: model name → its run's log.csv rows (step, l1, val_psnr, ...); offsets: steps its parent trained before
    it (fine-tunes continue on the parent's axis); validation: model name → what its validation reads
    (`DataSpec.validation_label`), named in the right panel's legend, since runs may validate on different data.
    None when no log has rows.
    """
    logs = {name: log for name, log in logs.items() if len(log)}
    if not logs:
        return None
    has_val = any("val_psnr" in log and log["val_psnr"].notna().any() for log in logs.values())
    fig = new_figure(10 if has_val else 6, 3.4)
    axes = fig.subplots(1, 2 if has_val else 1, squeeze=False)[0]
    for name, log in logs.items():
        color, _ = _style(name)
        step = log["step"] + offsets.get(name, 0)
        axes[0].plot(step, log["l1"], color=color, marker=".", markersize=3, linewidth=1, label=name)
        if has_val and "val_psnr" in log:
            val = log["val_psnr"].notna()
            if val.any():
                on = (validation or {}).get(name)
                label = f"{name} ({on})" if on else name
                axes[1].plot(step[val], log["val_psnr"][val], color=color, marker=".", linewidth=1, label=label)
    axes[0].set_xlabel("step (fine-tunes continue after their parent)", fontsize=7)
    axes[0].set_ylabel("training L1 (mean over the logging window)", fontsize=7)
    axes[0].set_yscale("log")
    if has_val:
        axes[1].set_xlabel("step", fontsize=7)
        axes[1].set_ylabel("validation PSNR (dB)", fontsize=7)
    for ax in axes:
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("Learning curves (from each run's log.csv)", fontsize=9)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------- from models


@styled
def expert_maps_figure(samples: Sequence[ExpertMapSample], path: str | os.PathLike, scale: float) -> Path | None:
    """Rows of images: the LR input, then each MoEISR model's expert map (yellow = cheapest … red = deepest)."""
    if not samples or not samples[0].maps:
        return None
    columns = 1 + len(samples[0].maps)
    fig = new_figure(3.0 * columns, 2.9 * len(samples) + 0.5)
    axes = fig.subplots(len(samples), columns, squeeze=False)
    for row, sample in zip(axes, samples, strict=True):
        row[0].imshow(_to_numpy(sample.lr), interpolation="nearest")
        row[0].set_title(f"{sample.title}: LR input {sample.lr.shape[-2]}×{sample.lr.shape[-1]}", fontsize=8)
        for ax, (name, colored, shares) in zip(row[1:], sample.maps, strict=True):
            ax.imshow(_to_numpy(colored), interpolation="nearest")
            text = " ".join(f"{100 * s:.0f}%" for s in shares)
            ax.set_title(f"{name} ×{scale:g}: {text}", fontsize=8)
        for ax in row:
            ax.set_axis_off()
    n_max = max(len(shares) for sample in samples for _, _, shares in sample.maps)
    palette = expert_colors(n_max).tolist()
    names = [COLOR_NAMES[j] if j < len(COLOR_NAMES) else f"#{j}" for j in range(n_max)]
    legend = [Patch(color=c, label=f"expert {j} ({names[j]})") for j, c in enumerate(palette)]
    fig.legend(handles=legend, loc="outside lower center", ncol=n_max, fontsize=8)
    fig.suptitle(
        "Expert maps: the expert each output pixel is routed to (cheapest first), shares of pixels", fontsize=9
    )
    return save_figure(fig, path)


@styled
def qualitative_figure(crops: QualitativeCrops, path: str | os.PathLike, scale: int) -> Path:
    """The HR image with the crop box, then one panel per method with its crop PSNR (Y, shave = scale)."""
    columns = 1 + len(crops.panels)
    fig = new_figure(2.3 * columns, 2.8)
    axes = fig.subplots(1, columns, squeeze=False)[0]
    axes[0].imshow(_to_numpy(crops.hr))
    top, left, height, width = crops.box
    axes[0].add_patch(Rectangle((left, top), width, height, fill=False, edgecolor="red", linewidth=1.5))
    axes[0].set_title(crops.title, fontsize=8)
    for ax, (label, piece, value) in zip(axes[1:], crops.panels, strict=True):
        ax.imshow(_to_numpy(piece), interpolation="nearest")
        ax.set_title(label if value is None else f"{label}\n{value:.2f} dB", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"Qualitative crops at ×{scale} (PSNR of the crop, Y channel)", fontsize=9)
    return save_figure(fig, path)
