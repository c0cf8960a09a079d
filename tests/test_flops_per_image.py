"""PerImageFlops (what the eval grid records) equals a full fvcore count on the same image and knob."""

import pytest
import torch

from moeisr.data.degrade import degrade, downsample
from moeisr.data.images import load_image
from moeisr.data.roots import data_root
from moeisr.flops import count, per_image
from moeisr.flops.per_image import ArchitectureFlops, PerImageFlops, SizeModel, SizeModelMismatch
from moeisr.models.base import using_decoder_path
from moeisr.registry import models

pytestmark = pytest.mark.data  # the shared images (tests/shared_data.py)

ENC = {"name": "edsr-baseline", "args": {"n_resblocks": 2, "n_feats": 16}}
LIIF = {
    "name": "liif",
    "args": {"encoder_spec": ENC, "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [32] * 4}}},
}
LTE = {
    "name": "lte",
    "args": {
        "encoder_spec": ENC,
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [32] * 3}},
        "hidden_dim": 32,
    },
}
MOE = {"name": "moeisr", "args": {"backbone_spec": LIIF, "mapper": {"n_layers": 2, "width": 8}}}
MOE_LTE = {"name": "moeisr", "args": {"backbone_spec": LTE, "mapper": {"n_layers": 2, "width": 8}}}
SPECS = {"liif": LIIF, "lte": LTE, "moeisr-liif": MOE, "moeisr-lte": MOE_LTE}


def _make(spec):
    torch.manual_seed(0)
    return models.make(spec).eval()


@pytest.fixture(scope="module")
def lr():
    hr = load_image(data_root() / "benchmark" / "Set14" / "HR" / "baboon.webp")
    return downsample(hr, 4)[:, 30:54, 40:60].unsqueeze(0).contiguous()


@pytest.fixture(scope="module")
def set5_crops():
    """Crops of two real Set5 images (different sizes), so the LR sizes of the grid differ."""
    root = data_root() / "benchmark" / "Set5" / "HR"
    return [load_image(root / "bird.webp")[:, :62, :75], load_image(root / "woman.webp")[:, 40:97, 10:58]]


@pytest.mark.slow  # 6-10 s per case, ~50 s in all on 2 shared cores
@pytest.mark.parametrize("path", ["as_published", "as_executed"])
@pytest.mark.parametrize("name", list(SPECS))
def test_the_size_model_equals_full_counts_on_real_images(name, path, set5_crops):
    """Integer (MATLAB LR) and non-integer (LIIF crop rule) scales, several LR sizes: exact equality."""
    model = _make(SPECS[name])
    fitted, reference = PerImageFlops(), PerImageFlops(fit_sizes=False)
    with using_decoder_path(model, "as_executed" if path == "as_executed" else "auto"):
        assert fitted.size_model(model) is not None  # the form holds for every supported architecture
        for hr in set5_crops:
            for scale in (2.0, 3.0, 3.7, 6.0):
                _, lr = degrade(hr, scale)
                lr = lr[None]
                knob = float("inf") if name.startswith("moeisr") else None
                assert fitted(model, lr, scale, knob)[0] == reference(model, lr, scale, knob)[0]


def test_one_image_after_the_fit_costs_one_trace(lr, monkeypatch):
    model = _make(LIIF)
    flops = PerImageFlops()
    flops.size_model(model)
    traced = []

    def counting(model, lr_hw, scale, **kwargs):
        traced.append(kwargs["out_size"])
        return count(model, lr_hw, scale, **kwargs)

    monkeypatch.setattr(per_image, "count", counting)
    flops(model, lr, 3.0, None)
    flops(model, lr, 4.0, None)  # same LR size: no new trace
    assert traced == [(3, 3)]


def test_outputs_above_one_chunk_are_counted_in_full(lr):
    model = _make(LIIF)
    chunk = 24 * 20 * 4 - 1  # x2 of the 24x20 crop needs two chunks
    flops = PerImageFlops(chunk_size=chunk)
    total, _ = flops(model, lr, 2.0, None)
    assert total == count(model, tuple(lr.shape[-2:]), 2.0, chunk_size=chunk).total
    assert flops._size_models == {}  # never fitted: the full count was taken


def test_a_count_that_breaks_the_form_is_refused():
    def not_bilinear(lr_hw, out_hw):
        return lr_hw[0] * lr_hw[1] + out_hw[0] ** 2 * out_hw[1]

    def lr_dependent(lr_hw, out_hw):
        return (1 + lr_hw[0]) * out_hw[0] * out_hw[1]

    for count_at in (not_bilinear, lr_dependent):
        with pytest.raises(SizeModelMismatch):
            SizeModel.fit(count_at)

    def bilinear(lr_hw, out_hw):
        return 7 * lr_hw[0] * lr_hw[1] + 3 * out_hw[0] + 5 * out_hw[1] + 11 * out_hw[0] * out_hw[1]

    assert SizeModel.fit(bilinear) == SizeModel(b=3, c=5, d=11)


def test_a_model_outside_the_form_falls_back_to_full_counts(lr, monkeypatch):
    model = _make(LIIF)
    flops = PerImageFlops()

    def refuse(cls, count_at):
        raise SizeModelMismatch("not of the form")

    monkeypatch.setattr(SizeModel, "fit", classmethod(refuse))
    total, _ = flops(model, lr, 3.0, None)
    assert flops.size_model(model) is None
    assert total == count(model, tuple(lr.shape[-2:]), 3.0).total


def test_architecture_flops_share_counts_between_checkpoints_of_one_architecture(lr):
    a, b = _make(MOE), _make(MOE)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.01)
    flops = ArchitectureFlops()
    flops(a, lr, 3.0, float("inf"))
    fitted = dict(flops._counts)
    flops(b, lr, 3.0, float("inf"))
    assert flops._counts == fitted  # b traced nothing new


@pytest.mark.parametrize("spec", [LIIF, MOE], ids=["liif", "moeisr-liif"])
def test_per_image_flops_equal_a_full_count(spec, lr):
    model = _make(spec)
    flops = PerImageFlops()
    knobs = [None]
    if spec is MOE:  # an untrained mapper's logits are close: find knobs that give mixed routings
        size = tuple(round(3 * n) for n in lr.shape[-2:])
        knobs = [0.0, float("inf"), float("-inf")] + [model.knob_for_budget(lr, size, b) for b in (0.75, 0.9)]
    seen = set()
    for knob in knobs:
        total, shares = flops(model, lr, 3.0, knob)
        report = count(model, None, 3.0, image=lr, routing_knob=knob)
        # MACs exact; only a few routing-dependent element-wise FLOPs (documented) may differ
        assert total == pytest.approx(report.total, rel=1e-3)
        if spec is MOE:
            assert shares == pytest.approx(report.expert_shares)
            seen.add(tuple(shares))
    assert spec is LIIF or len(seen) >= 3  # the knobs really changed the routing
