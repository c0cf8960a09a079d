"""Training samplers on the real T91/BSD200 images: shapes, ranges, conventions, determinism, skipping."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from moeisr.coords import make_coord
from moeisr.data import ImplicitDownsampled, ImplicitFullImage, TrainImages, load_image, resize, sample_seed
from moeisr.data.train import sample_generator
from moeisr.errors import UserError

pytestmark = pytest.mark.data  # the shared images (tests/shared_data.py)


@pytest.fixture(scope="module")
def bsd() -> TrainImages:
    return TrainImages(["BSD200"], limit=12, cache=True)


def dihedral(t: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flip/transpose variants of a C×H×W tensor."""
    out = []
    for transpose in (False, True):
        base = t.transpose(-2, -1) if transpose else t
        for dims in ((), (-1,), (-2,), (-2, -1)):
            out.append(base.flip(dims) if dims else base)
    return out


def test_sources_and_cache():
    images = TrainImages(["T91", "BSD200"], cache=True)
    assert len(images) == 291
    first = images[0]
    assert first.shape[0] == 3 and first.dtype == torch.float32
    assert images[0] is first  # cached
    assert TrainImages("BSD200", limit=3).size(0) in ((321, 481), (481, 321))
    with pytest.raises(UserError, match="did you mean T91"):
        TrainImages(["T19"])


def test_sample_shapes_ranges_and_cell(bsd):
    ds = ImplicitDownsampled(bsd, inp_size=48, scale_min=1, scale_max=4, sample_q=2304, seed=3)
    assert len(ds) == len(bsd.at_least(192))
    for index in range(4):
        item = ds[index]
        assert item["inp"].shape == (3, 48, 48) and item["inp"].dtype == torch.float32
        assert item["coord"].shape == (2304, 2) and item["cell"].shape == (2304, 2) and item["gt"].shape == (2304, 3)
        assert 0 <= item["inp"].min() and item["inp"].max() <= 1
        assert 0 <= item["gt"].min() and item["gt"].max() <= 1
        assert item["coord"].abs().max() < 1
        side = 2 / item["cell"][0, 0].item()
        assert 48 <= round(side) <= 192 and torch.allclose(item["cell"], item["cell"][:1].expand(2304, 2))
        # coordinates are pixel centres of a side×side grid: (c + 1) / cell - 1/2 is an integer index
        index_grid = (item["coord"] + 1) / item["cell"] - 0.5
        assert torch.allclose(index_grid, index_grid.round(), atol=1e-3)
        assert len({tuple(c) for c in item["coord"].tolist()}) == 2304  # drawn without replacement


def test_coord_cell_gt_convention_on_a_known_crop(tmp_path):
    """An image exactly the size of the HR patch: the crop is the whole image, up to flips/transpose."""
    image = load_image(TrainImages(["T91"], limit=1).paths[0])[:, :64, :64]
    Image.fromarray((image * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).save(tmp_path / "p.png")
    image = load_image(tmp_path / "p.png")
    images = TrainImages([tmp_path])
    plain = ImplicitDownsampled(images, inp_size=32, scale_min=2, scale_max=2, augment=False, sample_q=None)
    item = plain[0]
    assert torch.equal(item["coord"], make_coord((64, 64)))
    assert torch.equal(item["cell"], torch.full((4096, 2), 2 / 64))
    assert torch.equal(item["gt"], image.reshape(3, -1).T)
    assert torch.equal(item["inp"], resize(image, (32, 32)))

    augmented = ImplicitDownsampled(images, inp_size=32, scale_min=2, scale_max=2, sample_q=None, repeat=16)
    seen = set()
    for index in range(len(augmented)):
        item = augmented[index]
        gt = item["gt"].T.reshape(3, 64, 64)
        variants = dihedral(image)
        match = [k for k, v in enumerate(variants) if torch.equal(v, gt)]
        assert len(match) == 1
        # the LR went through the same flips/transpose as the HR
        assert torch.equal(item["inp"], dihedral(resize(image, (32, 32)))[match[0]])
        seen.add(match[0])
    assert len(seen) >= 4


def test_sample_q_rows_come_from_the_crop(tmp_path, bsd):
    ds = ImplicitDownsampled(bsd, inp_size=24, scale_min=1.5, scale_max=3, sample_q=300, seed=1)
    full = ImplicitDownsampled(bsd, inp_size=24, scale_min=1.5, scale_max=3, sample_q=None, seed=1)
    # same generator stream up to the pixel draw: same crop, so sampled rows are rows of the full sample
    a, b = ds[5], full[5]
    assert torch.equal(a["inp"], b["inp"])
    lookup = {tuple(c): g for c, g in zip(b["coord"].tolist(), b["gt"].tolist(), strict=True)}
    for c, g in zip(a["coord"].tolist(), a["gt"].tolist(), strict=True):
        assert lookup[tuple(c)] == g


def test_determinism_by_seed_epoch_index(bsd):
    def make(seed=0):
        return ImplicitDownsampled(bsd, inp_size=16, scale_min=1, scale_max=4, sample_q=64, seed=seed, repeat=2)

    first, second = make(), make()
    _ = [second[i] for i in (7, 2, 9)]  # order and history must not matter
    for index in (2, 5, 9):
        a, b = first[index], second[index]
        assert all(torch.equal(a[k], b[k]) for k in a)
    other_seed = make(seed=1)[5]
    assert not torch.equal(first[5]["gt"], other_seed["gt"])
    second.set_epoch(1)
    assert not torch.equal(first[5]["gt"], second[5]["gt"])
    first.set_epoch(1)
    assert torch.equal(first[5]["gt"], second[5]["gt"])
    # documented formula, independent of Python's hash randomisation
    assert sample_seed(0, 0, 0) == sample_seed(0, 0, 0) != sample_seed(0, 0, 1)
    assert 0 <= sample_seed(2**40, 3, 10**9) < 2**63
    draws = [torch.rand(4, generator=sample_generator(1, 2, 3)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])


def test_dataloader_batches(bsd):
    ds = ImplicitDownsampled(bsd, inp_size=32, scale_max=3, sample_q=512)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)))
    assert batch["inp"].shape == (4, 3, 32, 32) and batch["gt"].shape == (4, 512, 3)


def test_small_images_are_skipped_with_a_warning(tmp_path):
    source = load_image(TrainImages(["T91"], limit=1).paths[0])
    for name, (h, w) in {"big.png": (100, 120), "tiny.png": (40, 60), "thin.png": (100, 50)}.items():
        crop = source[:, :h, :w]
        Image.fromarray((crop * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()).save(tmp_path / name)
    images = TrainImages([tmp_path])
    assert len(images) == 3
    with pytest.warns(UserWarning) as record:
        ds = ImplicitDownsampled(images, inp_size=24, scale_min=1, scale_max=4, sample_q=100)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert any("tiny.png" in m and "40x60" in m for m in messages) and any("thin.png" in m for m in messages)
    assert len(ds) == 1 and ds.images.paths[0].name == "big.png"
    assert ds[0]["inp"].shape == (3, 24, 24)
    with pytest.raises(UserError, match="smaller than"), pytest.warns(UserWarning):
        ImplicitDownsampled(images, inp_size=48, scale_max=4)


def test_bad_settings_are_user_errors(bsd):
    with pytest.raises(UserError, match="sample_q"):
        ImplicitDownsampled(bsd, inp_size=16, scale_min=1, sample_q=2304)
    with pytest.raises(UserError, match="scale_min"):
        ImplicitDownsampled(bsd, scale_min=3, scale_max=2)


def test_full_image_eval_wrapper(bsd):
    ds = ImplicitFullImage(bsd, scale=3)
    item = ds[0]
    h, w = item["inp"].shape[-2:]
    n = (3 * h) * (3 * w)
    assert item["coord"].shape == (n, 2) and item["gt"].shape == (n, 3) and item["cell"].shape == (n, 2)
    assert torch.allclose(item["cell"][0], torch.tensor([2 / (3 * h), 2 / (3 * w)]))
