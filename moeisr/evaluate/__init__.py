"""Evaluation: the grid runner and its results cache (tidy rows keyed by checkpoint, image, scale, knob)."""

from moeisr.evaluate.cache import (
    BICUBIC_HASH,
    KEY_COLUMNS,
    REQUIRED_COLUMNS,
    CacheKey,
    ResultsCache,
    ckpt_hash,
    key_of,
    knob_label,
    make_key,
)

__all__ = [
    "BICUBIC_HASH",
    "KEY_COLUMNS",
    "REQUIRED_COLUMNS",
    "CacheKey",
    "ResultsCache",
    "ckpt_hash",
    "key_of",
    "knob_label",
    "make_key",
]
