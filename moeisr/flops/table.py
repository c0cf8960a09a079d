"""The readable breakdown printed by `moeisr flops`."""

from __future__ import annotations

import math

from moeisr.flops.analysis import FlopReport


def _g(flops: int) -> str:
    return f"{flops / 1e9:10.3f}"


def _pct(part: int, total: int) -> str:
    return f"{100 * part / total:6.1f}%" if total else "      -"


def _knob(knob: float | None) -> str:
    if knob is None:
        return "-"
    return f"{knob:g}" if math.isfinite(knob) else ("+inf (all cheapest)" if knob > 0 else "-inf (all deepest)")


def _hidden(hidden: list[int]) -> str:
    """[256, 256, 256] -> '[256]*3' (Python's list repetition); mixed widths as a list."""
    if hidden and len(set(hidden)) == 1:
        return f"[{hidden[0]}]*{len(hidden)}"
    return str(list(hidden))


def format_report(report: FlopReport, title: str | None = None) -> str:
    """A fixed-width table: components in GFLOPs and % of the total, experts, then zero/uncounted ops."""
    (h, w), (H, W) = report.lr_size, report.out_size
    lines = [
        f"{title or report.model}: LR {w}x{h} -> {W}x{H} (x{report.scale:g}, WxH)",
        f"routing: {report.routing}; knob {_knob(report.routing_knob)}",
        "GFLOPs (fvcore: 1 MAC = 1 FLOP; element-wise arithmetic 1 FLOP per element)",
        f"{'component':<28}{'GFLOPs':>10}{'share':>8}",
    ]
    row = "{:<28}{}{}"
    lines.append(row.format("encoder", _g(report.encoder), _pct(report.encoder, report.total)))
    if report.per_expert or report.mapper:
        lines.append(row.format("mapper", _g(report.mapper), _pct(report.mapper, report.total)))
    if report.latent:
        lines.append(row.format("latent MLP (LR)", _g(report.latent), _pct(report.latent, report.total)))
        lines.append(row.format("render MLP (HR)", _g(report.decoder), _pct(report.decoder, report.total)))
    else:
        lines.append(row.format("decoder (MLP)", _g(report.decoder), _pct(report.decoder, report.total)))
    for j, flops in enumerate(report.per_expert):
        label = f"  expert {j} {_hidden(report.expert_hidden_lists[j])}"[:27]
        lines.append(
            row.format(label, _g(flops), _pct(flops, report.total)) + f"  pixels {report.expert_shares[j]:.1%}"
        )
    lines.append(row.format("other", _g(report.other), _pct(report.other, report.total)))
    for name, flops in report.other_parts.items():
        lines.append(row.format(f"  {name}"[:27], _g(flops), _pct(flops, report.total)))
    lines.append(row.format("total", _g(report.total), _pct(report.total, report.total)))
    uncounted = ", ".join(f"{op} x{n}" for op, n in report.uncounted_ops.items()) or "none"
    lines.append(f"uncounted ops (fvcore counted 0, no decision): {uncounted}")
    return "\n".join(lines)
