"""The mapper: a small CNN on the encoder features z that scores the J experts for every output pixel.

RECONSTRUCTION NOTE: the MoEISR paper's full text is unavailable; the mapper below is our
reconstruction and every choice is a knob (see docs/moeisr.md):
- `n_layers` (1..5) 3×3 convolutions, `width` channels (default 64), ReLU between them; the last conv
  outputs J logits at LR resolution (zero padding, so the map keeps z's size).
- `use_cell`: if True, two constant channels holding the relative scale are concatenated to z before the
  first conv, so the routing can depend on the magnification and interact with the content. The
  channels are LR pixels per output pixel along rows and columns, i.e. cell·(h, w)/2 = 1/s
  (1 at ×1, 0.25 at ×4). Since the scale is unknown when the LR image is encoded, the wrapper runs the
  mapper at the first query of each distinct scale (see MoEISR.query).
- Each query takes the logits at its own coordinate by bilinear sampling (`sample_logits`:
  grid_sample, align_corners=False, border padding), so the expert map lives at output resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moeisr.errors import UserError

MAX_LAYERS = 5


class Mapper(nn.Module):
    """CNN from encoder features to per-expert logits.

    forward: feat B×C×h×w (+ optional scale B×2, LR pixels per output pixel as (rows, cols))
             -> logits B×J×h×w (unbounded reals).
    """

    def __init__(self, in_channels: int, n_experts: int, n_layers: int = 3, width: int = 64, use_cell: bool = False):
        super().__init__()
        if not 1 <= int(n_layers) <= MAX_LAYERS:
            raise UserError(f"mapper n_layers={n_layers} is out of range; use 1..{MAX_LAYERS}")
        if int(width) < 1:
            raise UserError(f"mapper width={width} must be a positive integer")
        self.in_channels, self.n_experts = int(in_channels), int(n_experts)
        self.n_layers, self.width, self.use_cell = int(n_layers), int(width), bool(use_cell)
        layers: list[nn.Module] = []
        last = self.in_channels + (2 if self.use_cell else 0)
        for _ in range(self.n_layers - 1):
            layers += [nn.Conv2d(last, self.width, 3, padding=1), nn.ReLU()]
            last = self.width
        layers.append(nn.Conv2d(last, self.n_experts, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, feat: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        if self.use_cell:
            if scale is None:
                raise ValueError("this mapper was built with use_cell=True and needs the relative scale (B×2)")
            b, _, h, w = feat.shape
            planes = scale.to(feat.dtype).view(b, 2, 1, 1).expand(b, 2, h, w)
            feat = torch.cat([feat, planes], dim=1)
        return self.body(feat)

    def macs_per_lr_pixel(self) -> int:
        """Closed-form conv MACs per LR pixel (9·in·out per 3×3 conv; zero-padded borders counted in full)."""
        return sum(9 * m.in_channels * m.out_channels for m in self.body if isinstance(m, nn.Conv2d))


def relative_scale(cell: torch.Tensor, lr_size: tuple[int, int]) -> torch.Tensor:
    """LR pixels per output pixel from a cell: cell B×Q×2 (or B×2) -> B×2, i.e. 1/s per axis.

    Uses the first query's cell: within one image every query has the same cell.
    """
    first = cell[:, 0] if cell.dim() == 3 else cell
    return first * first.new_tensor([lr_size[0] / 2.0, lr_size[1] / 2.0])


def sample_logits(logits: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample LR-resolution logits at query coordinates.

    logits: B×J×h×w; coord: B×Q×2, (row, col) in [-1, 1] (pixel centres, make_coord convention).
    Returns B×Q×J. Outside the LR grid the border value is used.
    """
    grid = coord.flip(-1).unsqueeze(1).to(logits.dtype)  # grid_sample wants (x, y) = (col, row)
    sampled = F.grid_sample(logits, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return sampled[:, :, 0, :].permute(0, 2, 1)
