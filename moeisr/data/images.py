"""Image files <-> tensors: 3×H×W float32 in [0, 1], 8-bit RGB semantics.

Every mode Pillow can open becomes 8-bit RGB:
- grey ("L", "1") is repeated on three channels; palette ("P", "PA") is expanded through its palette;
- alpha ("LA", "RGBA", "PA") is dropped, not composited: SR benchmarks compare colour channels only;
- 16-bit grey ("I;16*", "I") is scaled to 8 bits as round(v / 257) (v clipped to [0, 65535]); Pillow itself
  reduces 16-bit RGB PNGs to 8 bits (it keeps the high byte) before we see them;
- CMYK, YCbCr, LAB, HSV use Pillow's own conversion; float ("F") is read as 0..255 like Pillow's "L".
EXIF orientation is not applied: benchmark pixels are compared as stored. Multi-frame files give frame 0.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from moeisr.errors import UserError
from moeisr.io import atomic_write_bytes

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """H×W×3 uint8 array from a decoded Pillow image of any mode."""
    mode = img.mode
    if mode in SIXTEEN_BIT_MODES:
        v = np.asarray(img).astype(np.float64)
        grey = np.floor(np.clip(v, 0, 65535) / 257.0 + 0.5).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if mode in ("P", "PA"):
        img = img.convert("RGBA")  # honours palette transparency without Pillow's warning
    elif mode in ("1", "F", "LA", "La"):
        # premultiplied "La" has no direct conversion to "L": un-premultiply through "LA" first
        img = img.convert("LA").convert("L") if mode == "La" else img.convert("L")
    if img.mode != "RGB":
        img = img.convert("RGB")  # drops alpha; Pillow's formulas for CMYK, YCbCr, LAB, HSV
    return np.asarray(img, dtype=np.uint8)


def _check_file(path: Path) -> None:
    """UserError naming `path` if it is missing, not a regular file, or empty."""
    if not path.is_file():
        raise UserError(f"{path}: no such image file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: file is empty (0 bytes); replace it with a valid image")


def _decode_error(path: Path, exc: Exception) -> UserError:
    """The one-line UserError for a file Pillow cannot open or decode."""
    if isinstance(exc, UnidentifiedImageError):
        # Pillow identifies no format: not an image, or a pixel format it cannot decode (e.g. float RGB TIFF)
        return UserError(
            f"{path}: not an image Pillow can read (unknown format, or an unsupported pixel format such as "
            "float RGB); convert it to an 8- or 16-bit PNG"
        )
    if isinstance(exc, Image.DecompressionBombError):
        return UserError(f"{path}: {str(exc).splitlines()[0]}; use a smaller image")
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UserError(f"{path}: cannot decode image ({reason}); replace the file or check its format")


def read_rgb_uint8(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file fully into an H×W×3 uint8 array (see module docstring for mode handling).

    Raises UserError naming the file when it is missing, empty, truncated, corrupt, not an image, or in a
    mode that has no RGB conversion.
    """
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as img:
            img.load()  # force the full decode so truncation is caught here, not later
            mode = img.mode
            try:
                return _to_rgb_array(img)
            except ValueError as exc:  # Pillow has no conversion from this mode to RGB
                raise UserError(
                    f"{path}: unsupported image mode {mode!r} ({exc}); convert it to RGB, grey or palette PNG"
                ) from exc
    except UserError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        # UnidentifiedImageError and "image file is truncated" are OSErrors
        raise _decode_error(path, exc) from exc


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """Load any Pillow-readable image as a 3×H×W float32 tensor in [0, 1] (value v/255 per 8-bit level)."""
    array = read_rgb_uint8(path)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the file header without decoding pixels; UserError naming the file if unreadable."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _decode_error(path, exc) from exc
    return height, width


def quantize_8bit(img: torch.Tensor) -> torch.Tensor:
    """Snap values in [0, 1] to the 256 levels of an 8-bit file (round half up), same shape and dtype."""
    levels = torch.floor(img.clamp(0, 1) * 255 + 0.5)
    return levels.to(img.dtype) / 255


def to_uint8(img: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float in [0, 1] -> uint8 levels, clamped and rounded half up."""
    return torch.floor(img.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def save_image(img: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a 3×H×W (or 1×3×H×W) tensor in [0, 1] as an 8-bit PNG (or lossless WebP for .webp), atomically.

    The file is written to a temporary name in the same folder and renamed over `path` (`moeisr.io`), so a
    reader never sees a half-written image and a failed write (full disk, read-only folder: a UserError)
    keeps the previous file. Values are clamped to [0, 1] and rounded to 8 bits. Returns the path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".webp"):
        raise UserError(f"{path}: can only write .png or .webp images; change the file extension")
    if img.dim() == 4 and img.shape[0] == 1:
        img = img[0]
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"save_image expects 3×H×W or 1×3×H×W, got {tuple(img.shape)}")
    array = to_uint8(img.cpu()).permute(1, 2, 0).contiguous().numpy()
    buffer = io.BytesIO()  # encode first: a full disk or a read-only folder then fails in one place
    if suffix == ".png":
        Image.fromarray(array, "RGB").save(buffer, format="PNG")
    else:
        Image.fromarray(array, "RGB").save(buffer, format="WEBP", lossless=True, quality=100)
    return atomic_write_bytes(path, buffer.getbuffer())
