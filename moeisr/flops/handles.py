"""fvcore operator handles: what every operator on moeisr's forward paths costs, and why.

fvcore counts one multiply-add (MAC) as one FLOP for its matrix/convolution handles (`aten::linear`,
`aten::addmm`, `aten::mm`, `aten::matmul`, `aten::bmm`, `aten::einsum`, `aten::_convolution`, bias
adds not included) and counts nothing for any operator it has no handle for. We keep its matrix and
convolution handles and add handles so that every operator on the path is one of:

1. **counted** by a handle in `extra_handles()`:
   - element-wise arithmetic producing floating-point values (add, sub, mul, div, reciprocal, neg, abs,
     exp, log, cos, sin, sqrt, pow, ...): 1 FLOP per output element (not a MAC, but one arithmetic
     operation). Integer results (index arithmetic such as `row * w + col`) count 0: address
     computation, like fvcore's own `aten::floor_divide` / `aten::remainder`;
   - reductions (sum, mean): 1 FLOP per input element;
   - softmax / log_softmax: 3 FLOPs per element (exp, accumulate, divide; the max shift is not counted);
   - interpolation, per output element (channels included): bilinear 4, bicubic 16, nearest 0
     (`aten::upsample_*2d` and `aten::grid_sampler`, whose mode is read from the graph; fvcore's own
     grid_sampler handle assumes bilinear, which overcounts the nearest lookups of LIIF/LTE).
2. **zero by decision**: the operators in `ZERO_COST_OPS`, each with its reason: data movement (index,
   gather, scatter, cat, view, flip, clone, copy_, padding, F.unfold's `aten::im2col`, nearest
   upsampling), allocation, casts and rounding, comparisons and selections (relu, clamp, max, argmax,
   argsort: fvcore also counts relu/clamp/max as 0) and integer bookkeeping. They get a handle that
   returns 0 and records the call, so the report can list them.
3. **uncounted**: anything else, reported by fvcore's `unsupported_ops()` and in `FlopReport.uncounted_ops`.
   Our tests require this to be empty on the LIIF, LTE and MoEISR paths, so a new operator on the path
   forces a decision here.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from fvcore.nn.jit_handles import Handle, get_shape

# --------------------------------------------------------------------------------------------- rules

POINTWISE_ARITHMETIC = (
    "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "true_divide", "reciprocal",
    "neg", "abs", "exp", "log", "cos", "sin", "sqrt", "rsqrt", "pow", "square", "sigmoid", "tanh",
)  # fmt: skip
REDUCTIONS = ("sum", "mean")
SOFTMAX_FLOPS_PER_ELEMENT = 3
SOFTMAXES = ("softmax", "_softmax", "log_softmax", "_log_softmax")
BILINEAR_FLOPS = 4  # one MAC per corner of the 2×2 neighbourhood
BICUBIC_FLOPS = 16  # one MAC per tap of the 4×4 neighbourhood
# aten::grid_sampler's interpolation_mode argument
GRID_SAMPLER_MODES = {0: ("bilinear", BILINEAR_FLOPS), 1: ("nearest", 0), 2: ("bicubic", BICUBIC_FLOPS)}
INTERPOLATIONS = {
    "upsample_bilinear2d": BILINEAR_FLOPS,
    "_upsample_bilinear2d_aa": BILINEAR_FLOPS,  # antialiased downsampling has wider kernels: a lower bound
    "upsample_bicubic2d": BICUBIC_FLOPS,
    "_upsample_bicubic2d_aa": BICUBIC_FLOPS,
}

_MOVEMENT = "data movement (no arithmetic)"
_ALLOC = "allocation or constant"
_CAST = "cast or rounding (type conversion, no arithmetic)"
_SELECT = "comparison or selection (fvcore counts relu/clamp/max as 0 too)"
_INT = "integer bookkeeping (address computation)"

# operator (without "aten::") -> reason it costs 0 FLOPs; includes fvcore's own built-in zero list
ZERO_COST_OPS: dict[str, str] = {
    **dict.fromkeys(
        (
            "index", "index_select", "index_copy", "index_copy_", "index_put_", "gather", "scatter", "scatter_",
            "masked_fill", "masked_fill_", "cat", "stack", "view", "reshape", "flatten", "permute", "transpose",
            "t", "expand", "expand_as", "squeeze", "unsqueeze", "unsqueeze_", "slice", "select", "narrow",
            "split", "split_with_sizes", "chunk", "unbind", "unflatten", "flip", "roll", "clone", "copy_", "contiguous",
            "as_strided", "detach", "alias", "lift_fresh", "repeat", "meshgrid", "pad", "constant_pad_nd",
            "reflection_pad2d", "replication_pad2d", "im2col", "upsample_nearest2d", "dropout", "fill_",
            "zero_", "size", "numel",
        ),
        _MOVEMENT,
    ),
    "im2col": "F.unfold gathers k×k neighbourhoods into columns: pure data movement",
    "upsample_nearest2d": "nearest-neighbour lookup: pure data movement (fvcore counts 1 per output; we do not)",
    **dict.fromkeys(
        (
            "empty", "empty_like", "new_empty", "zeros", "zeros_like", "new_zeros", "ones", "ones_like",
            "new_ones", "full", "full_like", "new_full", "arange", "linspace", "scalar_tensor", "tensor",
        ),
        _ALLOC,
    ),
    **dict.fromkeys(("to", "type_as", "Int", "Float", "ScalarImplicit", "round", "floor", "ceil", "trunc"), _CAST),
    **dict.fromkeys(
        (
            "relu", "relu_", "clamp", "clamp_", "clamp_min", "clamp_max", "max", "min", "maximum", "minimum",
            "argmax", "argmin", "argsort", "sort", "topk", "eq", "ne", "gt", "ge", "lt", "le", "where",
            "__and__", "__or__", "bitwise_not", "logical_not", "logical_and", "nonzero", "isnan", "isinf", "any",
            "all",
        ),
        _SELECT,
    ),
    **dict.fromkeys(("floor_divide", "remainder", "bincount"), _INT),
}  # fmt: skip


def _numel(value: Any) -> int:
    shape = get_shape(value)
    return math.prod(shape) if shape is not None else 0


def _is_floating(value: Any) -> bool:
    scalar = getattr(value.type(), "scalarType", lambda: None)()
    return scalar in (None, "Float", "Double", "Half", "BFloat16", "ComplexFloat", "ComplexDouble")


def pointwise_handle(inputs: list, outputs: list) -> int:
    """1 FLOP per floating-point output element; integer/bool results (index arithmetic) 0."""
    return _numel(outputs[0]) if _is_floating(outputs[0]) else 0


def reduction_handle(inputs: list, outputs: list) -> int:
    """1 FLOP per input element of a floating-point reduction."""
    return _numel(inputs[0]) if _is_floating(inputs[0]) else 0


def softmax_handle(inputs: list, outputs: list) -> int:
    return SOFTMAX_FLOPS_PER_ELEMENT * _numel(outputs[0])


def interpolation_handle(flops_per_output: int) -> Handle:
    def handle(inputs: list, outputs: list) -> int:
        return flops_per_output * _numel(outputs[0])

    return handle


def grid_sampler_handle(inputs: list, outputs: list) -> int:
    """grid_sample(input, grid, mode, padding, align_corners): per output element by `mode`."""
    mode = inputs[2].toIValue()
    if mode not in GRID_SAMPLER_MODES:
        raise ValueError(f"aten::grid_sampler with unknown interpolation mode {mode!r}")
    return GRID_SAMPLER_MODES[mode][1] * _numel(outputs[0])


def zero_handle(name: str, calls: Counter) -> Handle:
    """A handle counting 0 FLOPs that records each call of `name` in `calls`."""

    def handle(inputs: list, outputs: list) -> int:
        calls[name] += 1
        return 0

    return handle


def extra_handles(zero_calls: Counter) -> dict[str, Callable]:
    """The handles to pass to `FlopCountAnalysis.set_op_handle(**...)` on top of fvcore's defaults.

    Zero-cost operators record their calls into `zero_calls` (a Counter owned by the caller).
    """
    handles: dict[str, Callable] = {f"aten::{op}": zero_handle(f"aten::{op}", zero_calls) for op in ZERO_COST_OPS}
    handles.update({f"aten::{op}": pointwise_handle for op in POINTWISE_ARITHMETIC})
    handles.update({f"aten::{op}": reduction_handle for op in REDUCTIONS})
    handles.update({f"aten::{op}": softmax_handle for op in SOFTMAXES})
    handles.update({f"aten::{op}": interpolation_handle(n) for op, n in INTERPOLATIONS.items()})
    handles["aten::grid_sampler"] = grid_sampler_handle
    return handles
