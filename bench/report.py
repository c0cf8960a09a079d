"""Write results/bench/: measurements.json (every row, merged across runs), summary.json (the figures and
the targets), bench.md (tables) and speed.png (a figure). Called by conftest.py at the end of a session.

Rows measured in this session replace the rows with the same key from earlier sessions; rows of tests that
did not run are kept (so `--bench-large` alone adds the ×30 case without dropping the rest). Every row
records the commit and time that measured it. Ratios are only ever formed within one row (one sweep).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from operator import ge, lt
from pathlib import Path

import benchlib as B

from moeisr.io import atomic_write_text
from moeisr.report.provenance import current_commit, machine
from moeisr.report.report_md import measured_commits

TARGETS = {"realised_over_flops": 0.9, "liif_vs_reference_speedup": 1.5, "decoder_peak_fraction": 0.6, "rss_gb": 6.0}
KEYS = {
    "decoder": ("model", "routing", "path"),
    "upscale": ("model", "routing", "dataset", "scale", "path"),
    "reference": ("image", "scale"),
    "overheads": ("what", "model"),
    "memory": ("case",),
    "experiments": ("experiment",),
}


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def merge(store: B.Store, out_dir: Path) -> dict:
    """This session's rows merged into out_dir/measurements.json's; returns the merged sections."""
    path = out_dir / "measurements.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    stamp = {
        "commit": current_commit(B.REPO, ignore=("results/",)),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    merged = {}
    for section, key_fields in KEYS.items():
        new_rows = [_json_safe({**row, **stamp}) for row in getattr(store, section)]
        new_keys = {tuple(str(r.get(k)) for k in key_fields) for r in new_rows}
        kept = [r for r in old.get(section, []) if tuple(str(r.get(k)) for k in key_fields) not in new_keys]
        merged[section] = kept + new_rows
    merged["weights"] = {**old.get("weights", {}), **store.weights}
    # a run that measured nothing machine-wide (e.g. one memory case) keeps the earlier run's load averages
    merged["machine"] = {**old.get("machine", {}), **machine(), **_json_safe(store.machine)}
    return merged


def _nest(rows, keys, value):
    out: dict = {}
    for row in rows:
        node = out
        for k in keys[:-1]:
            node = node.setdefault(str(row.get(k)), {})
        node[str(row.get(keys[-1]))] = value(row)
    return out


def _target(text: str, threshold: float, values: dict, meets: Callable[[float, float], bool]) -> dict:
    """A target of summary.json: its text and numeric threshold, the values, whether each of them meets the
    threshold (`values_met`) and whether all of them do (`met`, false without values)."""
    flags = {key: bool(meets(value, threshold)) for key, value in values.items()}
    return {"target": text, "threshold": threshold, "values": values, "values_met": flags,
            "met": bool(flags) and all(flags.values())}  # fmt: skip


def summarise(m: dict) -> dict:
    """The figures the issue asks for, with each target, its threshold and whether it was met (per value too)."""
    peaks = [r["matmul_peak_gflops"] for r in m["decoder"]]
    moe_rows = [r for r in m["upscale"] if r.get("routing") is not None]
    x4 = [r for r in moe_rows if float(r["scale"]) == 4 and r["dataset"] in ("Set14", "Urban100")]
    ratio_values = {f"{r['model']}/{r['dataset']}/x4/{r['routing']}/{r['path']}": r["realised_over_flops"] for r in x4}
    ref = m["reference"][-1] if m["reference"] else None
    fractions = {
        f"{r['model']}/{r['path']}": r["peak_fraction"]
        for r in m["decoder"]
        if r["model"] in ("liif", "lte") and r["path"] == "as_executed"
    }
    rss = {r["case"]: r["peak_rss_gb"] for r in m["memory"]}
    ratio = _target(f">= {TARGETS['realised_over_flops']}", TARGETS["realised_over_flops"], ratio_values, ge)
    by_path = {p: [f for k, f in ratio["values_met"].items() if k.endswith(p)] for p in ("as_executed", "as_published")}
    ratio["met"] = {p: bool(flags) and all(flags) for p, flags in by_path.items()}  # per path, over every routing
    targets = {
        "realised_over_flops_x4": ratio,
        "liif_vs_reference_speedup": {
            "target": f">= {TARGETS['liif_vs_reference_speedup']} with max abs diff <= 1e-5",
            "threshold": TARGETS["liif_vs_reference_speedup"],
            "value": ref and ref["speedup"],
            "max_abs_diff": ref and ref["max_abs_diff"],
            "met": bool(ref) and ref["speedup"] >= TARGETS["liif_vs_reference_speedup"] and ref["max_abs_diff"] <= 1e-5,
        },
        "decoder_peak_fraction": _target(
            f">= {TARGETS['decoder_peak_fraction']} (LIIF and LTE decoders, default executed path)",
            TARGETS["decoder_peak_fraction"],
            fractions,
            ge,
        ),
        "peak_rss": _target(f"< {TARGETS['rss_gb']} GB for every memory case", TARGETS["rss_gb"], rss, lt),
    }
    return {
        "provenance": {
            "commit": current_commit(
                B.REPO, ignore=("results/",)
            ),  # of this write; each row keeps the commit that measured it
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "measured_at_commits": sorted({r["commit"] for k in KEYS for r in m.get(k, []) if r.get("commit")}),
        },
        "machine": m["machine"],
        "weights": m["weights"],
        "flops_convention": "MACs of encoder + mapper + decoder MLPs (closed forms, moeisr.flops.closed_form; "
        "as_executed counts LIIF's per-LR-pixel projection and per-query tail); element-wise work not counted",
        "matmul_peak_gflops": {
            "median": statistics.median(peaks) if peaks else None,
            "max": max(peaks, default=None),
            "samples": len(peaks),
            "how": "fp32 2048x2048 torch.mm, 2n^3 FLOPs, best of 3, measured before every decoder round",
        },
        "decoder_megapixels_per_s": _nest(m["decoder"], ("model", "routing", "path"), lambda r: r["megapixels_per_s"]),
        "decoder_peak_fraction": _nest(m["decoder"], ("model", "routing", "path"), lambda r: r["peak_fraction"]),
        "upscale_megapixels_per_s": _nest(
            m["upscale"], ("model", "routing", "dataset", "scale", "path"), lambda r: r["megapixels_per_s"]
        ),
        "realised_over_flops": _nest(
            moe_rows, ("model", "dataset", "scale", "routing", "path"), lambda r: r["realised_over_flops"]
        ),
        "expert_counts": _nest(
            moe_rows, ("model", "dataset", "scale", "routing", "path"), lambda r: r["expert_counts"]
        ),
        "liif_vs_reference_speedup": ref,
        "peak_rss_gb": rss,
        "overheads": m["overheads"],
        "experiments": m["experiments"],
        "targets": targets,
    }


def _table(rows, columns) -> str:
    import pandas as pd

    if not rows:
        return "_not measured_\n"
    frame = pd.DataFrame([{c: "-" if r.get(c) is None else r.get(c) for c in columns} for r in rows])
    return frame.to_markdown(index=False, floatfmt=".4g") + "\n"


def markdown(m: dict, s: dict) -> str:
    lines = [
        "# moeisr speed suite",
        "",
        f"_Rows measured at commit(s) {measured_commits(s['provenance'])}, written {s['provenance']['written_at']}; "
        f"{s['machine']['cpu']}, {s['machine']['cores']} cores, torch {s['machine']['torch']} "
        f"({s['machine']['torch_threads']} threads), load average at start/end "
        f"{s['machine'].get('load_average_at_start')} / {s['machine'].get('load_average_at_end')}. Weights: "
        + ", ".join(f"{k}: {v}" for k, v in s["weights"].items())
        + "._",
        "",
        "## Targets",
        "",
    ]
    for name, t in s["targets"].items():
        lines.append(f"- **{name}** (target {t['target']}): met = `{t['met']}`")
    lines += ["", "## Decoder throughput (Set14 comic ×4, 89,280 queries)", ""]
    lines.append(
        _table(
            m["decoder"],
            ["model", "routing", "path", "megapixels_per_s", "achieved_gflops", "matmul_peak_gflops", "peak_fraction"],
        )
    )
    lines += ["## End-to-end upscale, side by side", ""]
    lines.append(
        _table(
            m["upscale"],
            [
                "model",
                "routing",
                "dataset",
                "scale",
                "path",
                "seconds",
                "megapixels_per_s",
                "speedup",
                "flop_ratio",
                "realised_over_flops",
                "expert_counts",
            ],
        )
    )
    lines += ["## LIIF against the official inference path", ""]
    lines.append(
        _table(m["reference"], ["image", "scale", "ours_seconds", "reference_seconds", "speedup", "max_abs_diff"])
    )
    lines += ["## Overheads and training step", ""]
    for row in m["overheads"]:
        lines.append(
            "- "
            + ", ".join(
                f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                for k, v in row.items()
                if k not in ("commit", "measured_at")
            )
        )
    lines += ["", "## Peak memory (one upscale per fresh process)", ""]
    lines.append(_table(m["memory"], ["case", "out_size", "seconds", "rss_before_gb", "peak_rss_gb", "under_limit"]))
    lines += ["## Experiments (kept / dropped)", ""]
    for row in m["experiments"]:
        lines.append(
            "- "
            + ", ".join(
                f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}"
                for k, v in row.items()
                if k not in ("commit", "measured_at")
            )
        )
    return "\n".join(lines) + "\n"


def figure(m: dict, path: Path) -> Path | None:
    if not m["decoder"] and not m["upscale"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    rows = m["decoder"]
    labels = [f"{r['model']}\n{r['routing'] or ''} {r['path'].removeprefix('as_')}" for r in rows]
    axes[0].barh(
        range(len(rows)),
        [r["megapixels_per_s"] for r in rows],
        color=["tab:blue" if r["path"] == "as_executed" else "tab:gray" for r in rows],
    )
    axes[0].set_yticks(range(len(rows)), labels, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("decoder throughput (output megapixels/s)")
    axes[0].set_title("Decoder queries (blue: as executed, grey: as published)")
    moe = [r for r in m["upscale"] if r.get("routing") is not None]
    for r in moe:
        marker = "o" if r["path"] == "as_executed" else "s"
        axes[1].scatter(
            r["flop_ratio"], r["speedup"], marker=marker, color="tab:red" if "liif" in r["model"] else "tab:green"
        )
        axes[1].annotate(f"{r['dataset']} x{r['scale']} {r['routing']}", (r["flop_ratio"], r["speedup"]), fontsize=6)
    if moe:
        top = max(max(r["flop_ratio"], r["speedup"]) for r in moe) * 1.1
        axes[1].plot([1, top], [1, top], "k--", lw=0.8, label="speed-up = MAC ratio")
        goal = TARGETS["realised_over_flops"]
        axes[1].plot([1, top], [1, goal * top], "k:", lw=0.8, label=f"{goal} × MAC ratio")
        axes[1].legend(fontsize=7)
    axes[1].set_xlabel("MAC ratio backbone / MoEISR")
    axes[1].set_ylabel("realised speed-up")
    axes[1].set_title("MoEISR vs backbone (red LIIF, green LTE; o executed, □ published)")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write(store: B.Store, out_dir: Path) -> list[Path]:
    """Merge this session's rows into out_dir/measurements.json, then everything made from it (`rebuild`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    merged = merge(store, out_dir)
    path = out_dir / "measurements.json"
    atomic_write_text(path, json.dumps(_json_safe(merged), indent=1) + "\n")
    return [path, *rebuild(out_dir, merged)]


def rebuild(out_dir: Path, merged: dict | None = None) -> list[Path]:
    """summary.json, bench.md, speed.png and the speed section of out_dir/../REPORT.md (if that exists) from the
    merged rows (default: out_dir/measurements.json), without measuring anything: after a change of what they
    show, `python bench/report.py [OUT_DIR]` rewrites them from the committed measurements."""
    if merged is None:
        merged = json.loads((out_dir / "measurements.json").read_text(encoding="utf-8"))
    summary = summarise(merged)
    paths = [out_dir / "summary.json", out_dir / "bench.md"]
    atomic_write_text(paths[0], json.dumps(_json_safe(summary), indent=1) + "\n")
    atomic_write_text(paths[1], markdown(merged, summary))
    fig = figure(merged, out_dir / "speed.png")
    if fig is not None:
        paths.append(fig)
    report = out_dir.parent / "REPORT.md"  # results/REPORT.md when the suite writes results/bench
    if report.is_file():
        from moeisr.report.report_md import SPEED_MARKERS, speed_section, splice_section

        text = splice_section(report.read_text(encoding="utf-8"), speed_section(out_dir.parent), SPEED_MARKERS)
        atomic_write_text(report, text)
        paths.append(report)
    return paths


if __name__ == "__main__":  # python bench/report.py [OUT_DIR]: rebuild from measurements.json, no benchmark runs
    import sys

    written = rebuild(Path(sys.argv[1]) if len(sys.argv) > 1 else B.RESULTS)
    print(f"moeisr bench: wrote {', '.join(str(p) for p in written)}")
