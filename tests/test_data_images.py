"""Image loading and saving on real images turned into awkward modes and broken files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from moeisr.data import list_images, load_image, save_image, to_uint8
from moeisr.errors import UserError

pytestmark = pytest.mark.data  # the shared images (tests/shared_data.py)


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A 40×56 crop of Set5's butterfly as H×W×3 uint8."""
    with Image.open(list_images("Set5")[2]) as img:
        return np.asarray(img.convert("RGB"))[100:140, 60:116].copy()


def as_array(t: torch.Tensor) -> np.ndarray:
    assert t.dtype == torch.float32 and t.dim() == 3 and t.shape[0] == 3
    assert 0 <= t.min() and t.max() <= 1
    return (t * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_real_webp_loads_as_rgb():
    t = load_image(list_images("Set5")[0])
    assert t.shape == (3, 512, 512)
    assert torch.equal(t * 255, (t * 255).round())  # exactly v / 255


def test_rgb_png_bmp_roundtrip(tmp_path, rgb):
    for suffix in ("png", "bmp", "tif"):
        path = tmp_path / f"x.{suffix}"
        Image.fromarray(rgb).save(path)
        assert np.array_equal(as_array(load_image(path)), rgb)


def test_jpeg_loads(tmp_path, rgb):
    path = tmp_path / "x.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    assert np.abs(as_array(load_image(path)).astype(int) - rgb).mean() < 4


def test_grey_is_repeated_on_three_channels(tmp_path, rgb):
    grey = Image.fromarray(rgb).convert("L")
    grey.save(tmp_path / "g.png")
    out = as_array(load_image(tmp_path / "g.png"))
    expected = np.asarray(grey)
    for c in range(3):
        assert np.array_equal(out[..., c], expected)


def test_alpha_is_dropped(tmp_path, rgb):
    alpha = np.random.default_rng(0).integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(as_array(load_image(tmp_path / "a.png")), rgb)
    grey = Image.fromarray(rgb).convert("L")
    la = Image.merge("LA", (grey, Image.fromarray(alpha)))
    la.save(tmp_path / "la.png")
    assert np.array_equal(as_array(load_image(tmp_path / "la.png"))[..., 1], np.asarray(grey))


def test_palette_is_expanded(tmp_path, rgb):
    palette = Image.fromarray(rgb).quantize(colors=16)
    palette.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as img:
        assert img.mode == "P"
    expected = np.asarray(palette.convert("RGB"))
    assert np.array_equal(as_array(load_image(tmp_path / "p.png")), expected)


def test_16bit_grey_is_scaled_by_257(tmp_path, rgb):
    grey = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.int64)
    offsets = np.random.default_rng(1).integers(-128, 129, grey.shape)
    v16 = np.clip(grey * 257 + offsets, 0, 65535).astype(np.uint16)
    Image.fromarray(v16).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as img:
        assert img.mode.startswith("I")
    out = as_array(load_image(tmp_path / "g16.png"))
    expected = np.floor(v16 / 257 + 0.5).astype(np.uint8)
    assert np.array_equal(out[..., 0], expected) and np.array_equal(out[..., 2], expected)
    assert np.abs(out[..., 0].astype(int) - grey).max() <= 1


def test_cmyk_uses_pillow_conversion(tmp_path, rgb):
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.tif")
    with Image.open(tmp_path / "c.tif") as img:
        assert img.mode == "CMYK"
        expected = np.asarray(img.convert("RGB"))
    assert np.array_equal(as_array(load_image(tmp_path / "c.tif")), expected)


def test_truncated_png_names_the_file(tmp_path, rgb):
    good = tmp_path / "good.png"
    Image.fromarray(rgb).save(good)
    data = good.read_bytes()
    bad = tmp_path / "truncated.png"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated.png") as info:
        load_image(bad)
    assert "\n" not in str(info.value)


def test_zero_byte_and_non_image_and_missing_name_the_file(tmp_path):
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(UserError, match="empty.png"):
        load_image(empty)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    with pytest.raises(UserError, match="notes.png"):
        load_image(text)
    with pytest.raises(UserError, match="absent.png"):
        load_image(tmp_path / "absent.png")


def test_save_image_roundtrip_and_atomic(tmp_path):
    img = load_image(list_images("Set5")[1])[:, :64, :80]
    out = save_image(img, tmp_path / "sub" / "out.png")
    assert out.exists() and [p.name for p in out.parent.iterdir()] == ["out.png"]  # no temp file left
    assert torch.equal(load_image(out), img)
    save_image(img[None], tmp_path / "out.webp")
    assert torch.equal(load_image(tmp_path / "out.webp"), img)
    noisy = img + 0.3 * torch.randn_like(img)  # out of range: clamped and rounded
    save_image(noisy, out)
    assert torch.equal(load_image(out), to_uint8(noisy).float() / 255)
    with pytest.raises(UserError, match="out.jpg"):
        save_image(img, tmp_path / "out.jpg")
