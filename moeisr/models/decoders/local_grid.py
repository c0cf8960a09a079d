"""Where a query falls on the LR feature grid: nearest cells for the local-ensemble shifts, relative
coordinates, ensemble weights and row gathers. Shared by LIIF and LTE.

The nearest cell is found with the same `grid_sample(mode="nearest", align_corners=False)` call the
official code uses, applied to a map of cell indices instead of the features, so the chosen cells agree
with the official implementation bit for bit (ties included) on every device; the features are then
gathered from a channels-last copy, which is cheaper than sampling every channel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moeisr.coords import make_coord

# The official shifts: eps breaks ties between neighbouring cells, the clamp keeps queries inside.
EPS_SHIFT = 1e-6
CLAMP = 1 - 1e-6
AREA_EPS = 1e-9


def cell_index_map(batch: int, h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """B×2×h×w map holding each cell's (row, col) index (exact in float32 up to 2^24 per side)."""
    rows = torch.arange(h, device=device, dtype=dtype).view(h, 1).expand(h, w)
    cols = torch.arange(w, device=device, dtype=dtype).view(1, w).expand(h, w)
    return torch.stack((rows, cols)).unsqueeze(0).expand(batch, 2, h, w)


def shift_offsets(h: int, w: int, local_ensemble: bool, device=None, dtype=torch.float32) -> torch.Tensor:
    """K×2 coordinate offsets of the ensemble shifts in official order: (-1,-1), (-1,1), (1,-1), (1,1)
    half-cells plus eps (K=4), or a single zero shift (K=1)."""
    if not local_ensemble:
        return torch.zeros(1, 2, device=device, dtype=dtype)
    rx, ry = 1 / h, 1 / w  # half a cell in [-1, 1] units
    shifts = [(vx * rx + EPS_SHIFT, vy * ry + EPS_SHIFT) for vx in (-1, 1) for vy in (-1, 1)]
    return torch.tensor(shifts, device=device, dtype=dtype)


def nearest_cells(
    coord: torch.Tensor, index_map: torch.Tensor, local_ensemble: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For B×Q×2 queries, the cells picked by each of the K shifts.

    Returns (rows, cols, rel_coord): rows/cols are B×Q×K int64 cell indices; rel_coord is B×Q×K×2, the
    query minus the picked cell's centre, in units of LR cells (as the official `rel_coord`).
    """
    B, Q, _ = coord.shape
    h, w = index_map.shape[-2:]
    offsets = shift_offsets(h, w, local_ensemble, device=coord.device, dtype=coord.dtype)
    K = offsets.shape[0]
    shifted = (coord.unsqueeze(2) + offsets).clamp(-CLAMP, CLAMP)
    grid = shifted.flip(-1).view(B, 1, Q * K, 2)
    picked = F.grid_sample(index_map, grid, mode="nearest", align_corners=False)  # B×2×1×QK
    picked = picked.view(B, 2, Q, K).round().long()
    rows, cols = picked[:, 0], picked[:, 1]
    # the picked cell's centre, with the same float values as the official sampled `feat_coord`
    row_centres = make_coord((h,), device=coord.device, dtype=coord.dtype)[:, 0]
    col_centres = make_coord((w,), device=coord.device, dtype=coord.dtype)[:, 0]
    centres = torch.stack((row_centres[rows], col_centres[cols]), dim=-1)
    scale = torch.tensor([h, w], device=coord.device, dtype=coord.dtype)
    rel_coord = (coord.unsqueeze(2) - centres) * scale
    return rows, cols, rel_coord


def ensemble_weights(rel_coord: torch.Tensor) -> torch.Tensor:
    """B×Q×K×2 relative coordinates → B×Q×K weights summing to 1.

    Each shift is weighted by the area of the rectangle between the query and the diagonally opposite
    cell centre (bilinear-style), i.e. the areas in reverse shift order; K=1 gives weight 1.
    """
    areas = (rel_coord[..., 0] * rel_coord[..., 1]).abs() + AREA_EPS
    total = areas.sum(dim=-1, keepdim=True)
    return areas.flip(-1) / total


def combine(pred: torch.Tensor, rel_coord: torch.Tensor) -> torch.Tensor:
    """Blend per-shift predictions B×Q×K×3 into B×Q×3 with `ensemble_weights`."""
    return (pred * ensemble_weights(rel_coord).unsqueeze(-1)).sum(dim=2)


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of a channels-last table B×N×C at per-batch indices B×... → B×...×C."""
    B, N, C = table.shape
    offset = torch.arange(B, device=index.device).view(B, *([1] * (index.dim() - 1))) * N
    flat = torch.index_select(table.reshape(B * N, C), 0, (index + offset).reshape(-1))
    return flat.view(*index.shape, C)
