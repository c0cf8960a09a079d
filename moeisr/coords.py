"""Coordinates and cells: the one definition used everywhere (LIIF's `make_coord` convention).

Coordinates are (row, col) pairs at pixel centres, in [-1, 1]: for a side of n pixels, pixel i sits at
-1 + (2i + 1)/n. A cell is the (height, width) of one output pixel in the same units: (2/H, 2/W).
"""

from __future__ import annotations

import torch


def make_coord(shape: tuple[int, ...], flatten: bool = True, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates of a grid of `shape` (e.g. (H, W)).

    Returns (H*W, len(shape)) if `flatten`, else (H, W, len(shape)); values in (-1, 1).
    """
    axes = []
    for n in shape:
        r = 1.0 / n
        axes.append(-1 + r + 2 * r * torch.arange(n, device=device, dtype=dtype))
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.reshape(-1, grid.shape[-1]) if flatten else grid


def make_cell(coord: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Cell sizes for queries at `coord` (..., 2) on an output grid of `shape` (H, W): (..., 2)."""
    cell = torch.empty_like(coord)
    cell[..., 0] = 2.0 / shape[0]
    cell[..., 1] = 2.0 / shape[1]
    return cell
