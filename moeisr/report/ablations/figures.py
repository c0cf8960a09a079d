"""Ablation figures (matplotlib's Agg canvas with seaborn styling, written atomically like the main figures).

- `factors_figure`: per MoEISR model, each row's mean ΔPSNR against its mean ΔGFLOPs relative to the reference,
  with the per-cell range as error bars and the seed-to-seed noise of the reference as a grey band.
- `sweep_figure`: one MoEISR model's PSNR-vs-GFLOPs curves per dataset (rows) and scale (columns): the learned
  routing along the knob, the argmax routing, random routing at the learned shares, the oracle, the backbone and the
  Pareto front of the attainable points.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from moeisr.report.ablations.tables import NOISE_FACTOR, family_label
from moeisr.report.figures import dataset_scale_figure, legend_and_save, new_figure, styled

COLORS = {"learned": "#08306b", "random": "#969696", "oracle": "#2ca02c", "backbone": "#d62728", "front": "#fdae6b"}


@styled
def factors_figure(summary: pd.DataFrame, path: str | os.PathLike) -> Path | None:
    """ΔPSNR (dB) vs ΔGFLOPs (%) of every factor row against its reference, one panel per base. None if no row."""
    rows = summary[summary["factor"].apply(lambda f: isinstance(f, str))] if not summary.empty else summary
    if rows.empty:
        return None
    bases = list(dict.fromkeys(rows["base"]))
    factors = list(dict.fromkeys(rows["factor_label"]))
    palette = dict(zip(factors, sns.color_palette("tab10", len(factors)), strict=True))
    fig = new_figure(4.6 * len(bases) + 1.8, 3.8)
    axes = fig.subplots(1, len(bases), squeeze=False)[0]
    handles = {}
    for ax, base in zip(axes, bases, strict=True):
        part = rows[rows["base"] == base]
        ax.axhline(0, color="#444444", linewidth=0.8)
        ax.axvline(0, color="#444444", linewidth=0.8)
        noise = part.loc[part["factor"] == NOISE_FACTOR, "d_psnr"].abs()
        if len(noise):  # effects inside the band are within what another seed of the reference gives
            band = noise.max()
            handles["seed-to-seed noise"] = ax.axhspan(-band, band, color="#bdbdbd", alpha=0.35, linewidth=0,
                                                       label="seed-to-seed noise")  # fmt: skip
        handles["reference"] = ax.scatter([0], [0], color="black", marker="P", s=60, zorder=3, label="reference")
        for _, r in part.iterrows():
            color = palette[r["factor_label"]]
            xerr = [[r["d_gflops_pct"] - r["d_gflops_pct_min"]], [r["d_gflops_pct_max"] - r["d_gflops_pct"]]]
            yerr = [[r["d_psnr"] - r["d_psnr_min"]], [r["d_psnr_max"] - r["d_psnr"]]]
            ax.errorbar(r["d_gflops_pct"], r["d_psnr"], xerr=xerr, yerr=yerr, color=color, alpha=0.45, fmt="none")
            handles[r["factor_label"]] = ax.scatter(
                r["d_gflops_pct"], r["d_psnr"], color=color, s=36, zorder=3, label=r["factor_label"]
            )
            ax.annotate(str(r["value"]), (r["d_gflops_pct"], r["d_psnr"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")  # fmt: skip
        ax.set_title(f"{family_label(base)}: rows against their reference", fontsize=8)
        ax.set_xlabel("ΔGFLOPs vs reference (%, mean over cells; bars: per-cell range)", fontsize=7)
        ax.set_ylabel("ΔPSNR vs reference (dB)", fontsize=7)
        ax.tick_params(labelsize=7)
    title = "Ablation factors: each row differs from its reference in one factor (same budget)"
    return legend_and_save(fig, handles, title, path)


@styled
def sweep_figure(
    points: pd.DataFrame, family: str, path: str | os.PathLike, set_sizes: Mapping[str, int] | None = None
) -> Path | None:
    """PSNR vs GFLOPs of one MoEISR model's routers per dataset and scale (module docstring). None if no point."""
    part = points[points["family"] == family]
    if part.empty:
        return None
    return dataset_scale_figure(
        part,
        _sweep_panel,
        path,
        f"{family}: controllable routing, reference routers and the Pareto front",
        panel_size=(3.3, 2.8),
        legend_width=2.2,
        set_sizes=set_sizes,
    )


def _sweep_panel(ax, cell: pd.DataFrame) -> dict:
    handles = {}
    front = cell[cell["on_front"]].sort_values("gflops")
    if len(front):
        # the best PSNR attainable at each budget: a staircase through the front points, flat up to the costliest point
        x = [*front["gflops"], cell["gflops"].max()]
        y = [*front["psnr"], front["psnr"].iloc[-1]]
        label = "Pareto front (attainable)"
        (handles[label],) = ax.step(x, y, where="post", color=COLORS["front"], linewidth=5, alpha=0.6, zorder=1,
                                    label=label)  # fmt: skip
    learned = cell[cell["router"] == "learned"].sort_values("gflops")
    if len(learned):
        (handles["learned routing (knob sweep)"],) = ax.plot(
            learned["gflops"], learned["psnr"], color=COLORS["learned"], marker="o", markersize=3.5, linewidth=1.2,
            zorder=3, label="learned routing (knob sweep)",
        )  # fmt: skip
        argmax = learned[learned["knob"] == "none"]
        if len(argmax):
            handles["argmax (knob default)"] = ax.scatter(
                argmax["gflops"], argmax["psnr"], color=COLORS["learned"], marker="*", s=140, zorder=4,
                edgecolor="white", label="argmax (knob default)",
            )  # fmt: skip
    random = cell[cell["router"] == "random"]
    if len(random):
        handles["random at the learned shares"] = ax.scatter(
            random["gflops"], random["psnr"], color=COLORS["random"], marker="x", s=22, zorder=2,
            label="random at the learned shares",
        )  # fmt: skip
    oracle = cell[cell["router"] == "oracle"].sort_values("gflops")
    if len(oracle):
        handles["oracle (reads HR; ε per point)"] = ax.scatter(
            oracle["gflops"], oracle["psnr"], color=COLORS["oracle"], marker="^", s=30, zorder=3,
            label="oracle (reads HR; ε per point)",
        )  # fmt: skip
        for k, (_, o) in enumerate(oracle.iterrows()):  # staggered: the ε points are often close together
            name = o["label"].removeprefix("oracle ")
            ax.annotate(name, (o["gflops"], o["psnr"]), fontsize=6, xytext=(4, -8 - 7 * k), textcoords="offset points",
                        color=COLORS["oracle"])  # fmt: skip
    backbone = cell[cell["router"] == "backbone"]
    if len(backbone):
        handles["backbone"] = ax.scatter(
            backbone["gflops"], backbone["psnr"], color=COLORS["backbone"], marker="s", s=30, zorder=3,
            label="backbone",
        )  # fmt: skip
    values = cell["psnr"].to_numpy(dtype=float)
    if np.isfinite(values).any():
        pad = max(0.02, 0.08 * (np.nanmax(values) - np.nanmin(values)))
        ax.set_ylim(np.nanmin(values) - pad, np.nanmax(values) + pad)
    return handles
