"""Implicit decoders (LIIF, LTE), each split into `encode` (features once) and `query` (pixels)."""

from moeisr.models.decoders.liif import LIIF
from moeisr.models.decoders.lte import LTE

__all__ = ["LIIF", "LTE"]
