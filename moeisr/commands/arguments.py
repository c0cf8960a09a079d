"""Argument parsers shared by the subcommands (values are validated here, once)."""

from __future__ import annotations

import math

from moeisr.errors import UserError


def csv_list(text: str) -> list[str]:
    """'a, b,c' → ['a', 'b', 'c'] (empty items dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def scale_list(option: str, example: str, allow_none: bool = False):
    """An argparse `type=` for comma-separated scales, each finite and >= 1; 'none' → [] if allowed."""

    def parse(text: str) -> list[float]:
        if allow_none and text.strip().lower() in ("", "none"):
            return []
        scales = []
        for item in csv_list(text):
            try:
                value = float(item)
            except ValueError:
                raise UserError(f"{option}: {item!r} is not a number; use e.g. {option} {example}") from None
            if not math.isfinite(value) or value < 1:
                raise UserError(f"{option}: {item!r} must be a finite number >= 1")
            scales.append(value)
        return scales

    return parse
