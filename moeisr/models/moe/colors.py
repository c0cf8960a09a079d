"""Expert maps as pictures: one fixed colour per expert, as in the paper's figures.

Experts are indexed cheapest (0) to most expensive (J-1). The first four colours are yellow, green,
blue and red, so a 4-expert map reads yellow = cheapest ... red = deepest; experts beyond the fourth get
magenta, cyan, orange, purple, brown, grey and then golden-ratio hues, all distinct.
"""

from __future__ import annotations

import colorsys

import torch

BASE_COLORS: tuple[tuple[float, float, float], ...] = (
    (1.00, 0.85, 0.00),  # yellow
    (0.10, 0.70, 0.20),  # green
    (0.15, 0.35, 1.00),  # blue
    (0.90, 0.10, 0.10),  # red
    (0.90, 0.20, 0.85),  # magenta
    (0.10, 0.85, 0.90),  # cyan
    (1.00, 0.55, 0.05),  # orange
    (0.50, 0.20, 0.75),  # purple
    (0.55, 0.35, 0.15),  # brown
    (0.50, 0.50, 0.50),  # grey
)
COLOR_NAMES = ("yellow", "green", "blue", "red", "magenta", "cyan", "orange", "purple", "brown", "grey")


def expert_colors(n_experts: int) -> torch.Tensor:
    """J×3 float32 RGB colours in [0, 1], fixed per expert index (cheapest first)."""
    colors = list(BASE_COLORS[:n_experts])
    golden = 0.618033988749895
    for i in range(len(colors), n_experts):
        hue = (0.11 + i * golden) % 1.0
        colors.append(colorsys.hsv_to_rgb(hue, 0.75, 0.6 + 0.3 * (i % 2)))
    return torch.tensor(colors, dtype=torch.float32).reshape(n_experts, 3)


def expert_shares(expert_map: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Fraction of pixels routed to each expert: (J,) float64 summing to 1. expert_map: any shape, int64."""
    counts = torch.bincount(expert_map.reshape(-1).cpu(), minlength=n_experts).to(torch.float64)
    if counts.numel() != n_experts:
        raise ValueError(f"expert map holds index {counts.numel() - 1}, but there are only {n_experts} experts")
    return counts / counts.sum().clamp_min(1)


def colorize_expert_map(expert_map: torch.Tensor, n_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour an expert map.

    expert_map: H×W or B×H×W int64 in [0, J). Returns (image, shares): image 3×H×W or B×3×H×W float32
    in [0, 1] (each pixel its expert's colour), shares (J,) float64 over all pixels, summing to 1.
    """
    shares = expert_shares(expert_map, n_experts)
    palette = expert_colors(n_experts).to(expert_map.device)
    image = palette[expert_map.long()]  # ...×H×W×3
    return image.movedim(-1, -3).contiguous(), shares


def overlay_expert_map(sr: torch.Tensor, expert_map: torch.Tensor, n_experts: int, alpha: float = 0.5) -> torch.Tensor:
    """Blend the coloured map over an SR image: sr B×3×H×W in [0, 1], expert_map B×H×W -> B×3×H×W in [0, 1]."""
    colored, _ = colorize_expert_map(expert_map, n_experts)
    return ((1 - alpha) * sr + alpha * colored.to(sr.dtype)).clamp(0, 1)
