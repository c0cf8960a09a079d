"""FLOPs accounting: fvcore on the real `upscale` path, extra operator handles, closed forms.

Convention (see docs/flops.md): GFLOPs as fvcore counts them, 1 multiply-add = 1 FLOP; element-wise
arithmetic 1 FLOP per element; data movement 0.

- `count(model, lr_size, scale, image=None, routing_knob=None, chunk_size=...) -> FlopReport`
- `closed_form`: the same quantities as formulas (MACs), for checking and for the docs.
- `handles`: the operator handles and the documented zero-cost allow-list.
- `format_report(report) -> str`: the readable table printed by `moeisr flops`.
"""

from moeisr.flops import closed_form, handles
from moeisr.flops.analysis import CONVENTION, FlopReport, count, synthetic_lr
from moeisr.flops.table import format_report

__all__ = ["CONVENTION", "FlopReport", "closed_form", "count", "format_report", "handles", "synthetic_lr"]
