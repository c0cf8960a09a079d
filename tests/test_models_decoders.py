"""LIIF and LTE: equality with the official inference path, the query/mlp contract, ensemble weights,
chunking, cells and gradients, on real Set14 LR patches."""

import pytest
import torch
from test_models_support import lr_crop, reference, small_model

from moeisr.coords import make_cell, make_coord
from moeisr.models.base import output_size, upscale
from moeisr.models.decoders.local_grid import ensemble_weights, nearest_cells

REF = reference()
BACKBONES = [("liif", "edsr-baseline"), ("liif", "rdn"), ("lte", "edsr-baseline"), ("lte", "rdn")]


def grid_queries(batch, size):
    coord = make_coord(size).unsqueeze(0).expand(batch, -1, -1)
    return coord, make_cell(coord, size)


@pytest.mark.parametrize(("decoder", "encoder"), BACKBONES)
def test_query_equals_official_path(decoder, encoder):
    model = small_model(decoder, encoder)
    lr = torch.cat([lr_crop("comic"), lr_crop("baboon", top=30, left=40)])  # B=2, real content
    coord, cell = grid_queries(2, (53, 47))  # ×2.2 / ×2.35, not integer
    with torch.no_grad():
        ours = model(lr, coord, cell)
    official = REF.reference_predict(model, lr, coord, cell, bsize=1000)
    assert ours.shape == (2, 53 * 47, 3)
    torch.testing.assert_close(ours, official, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "args",
    [
        {"local_ensemble": False},
        {"feat_unfold": False},
        {"cell_decode": False},
        {"local_ensemble": False, "feat_unfold": False, "cell_decode": False},
    ],
)
def test_liif_variants_equal_official_path(args):
    model = small_model("liif", **args)
    lr = lr_crop("zebra")
    coord, cell = grid_queries(1, (61, 50))
    with torch.no_grad():
        ours = model(lr, coord, cell)
    torch.testing.assert_close(ours, REF.reference_predict(model, lr, coord, cell), atol=1e-5, rtol=0)


def test_liif_neighbourhood_gather_equals_unfolded_table():
    """The low-memory path (no precomputed unfold, for huge feature maps) gives the same inputs."""
    model = small_model("liif", "rdn")
    lr = lr_crop("monarch", h=17, w=23)
    coord, cell = grid_queries(1, (40, 51))
    with torch.no_grad():
        table = model.encode(lr)
        model.unfold_table_max_bytes = 0
        padded = model.encode(lr)
        assert "feat_table" in table and "feat_padded" in padded
        assert torch.equal(model.decoder_inputs(table, coord, cell)[0], model.decoder_inputs(padded, coord, cell)[0])


@pytest.mark.parametrize(("decoder", "encoder"), [("liif", "edsr-baseline"), ("lte", "rdn")])
def test_upscale_equals_official_pipeline_with_and_without_cell_clamp(decoder, encoder):
    model = small_model(decoder, encoder)
    lr = lr_crop("lenna", top=50, left=50, h=16, w=14)
    size = output_size((16, 14), 5.3)
    for clamp in (None, 4.0):
        ours = upscale(model, lr, size, chunk_size=4096, cell_clamp=clamp)
        torch.testing.assert_close(ours, REF.reference_upscale(model, lr, size, cell_clamp=clamp), atol=1e-5, rtol=0)


@pytest.mark.parametrize("decoder", ["liif", "lte"])
def test_mlp_is_called_once_on_stacked_inputs(decoder):
    model = small_model(decoder)
    lr = lr_crop()
    coord, cell = grid_queries(1, (30, 25))
    calls = []

    def spy(x):
        calls.append(tuple(x.shape))
        return model.imnet(x)

    with torch.no_grad():
        features = model.encode(lr)
        assert features["feat"].shape == (1, model.encoder.out_dim, 24, 20)
        out = model.query(features, coord, cell, mlp=spy)
        assert calls == [(1, 30 * 25, 4, model.imnet_in_dim)]
        assert torch.equal(out, model.query(features, coord, cell))
    if decoder == "liif":
        no_ensemble = small_model("liif", local_ensemble=False)
        with torch.no_grad():
            no_ensemble.query(no_ensemble.encode(lr), coord, cell, mlp=spy)
        assert calls[-1] == (1, 30 * 25, 1, no_ensemble.imnet_in_dim)


def test_local_ensemble_weights_sum_to_one():
    model = small_model("liif")
    lr = lr_crop()
    coord = torch.rand(2, 500, 2) * 2 - 1  # anywhere, including the borders
    features = model.encode(lr.expand(2, -1, -1, -1))
    rows, cols, rel = nearest_cells(coord, features["index_map"], local_ensemble=True)
    weights = ensemble_weights(rel)
    assert weights.shape == (2, 500, 4) and (weights >= 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 500), atol=1e-6, rtol=0)
    assert rows.min() >= 0 and rows.max() < 24 and cols.min() >= 0 and cols.max() < 20
    # through the public contract: a constant decoder output of 1 (normalised) comes back as exactly 1
    ones = model.query(features, coord, make_cell(coord, (100, 100)), mlp=lambda x: torch.ones(*x.shape[:-1], 3))
    torch.testing.assert_close(ones, torch.ones(2, 500, 3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("decoder", ["liif", "lte"])
def test_chunk_borders_are_seamless(decoder):
    model = small_model(decoder, "rdn")
    lr = lr_crop("flowers", h=15, w=18)
    size = output_size((15, 18), 3.7)
    whole = upscale(model, lr, size, chunk_size=size[0] * size[1])
    for chunk in (997, 64):  # chunks that end mid-row
        torch.testing.assert_close(upscale(model, lr, size, chunk_size=chunk), whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("decoder", ["liif", "lte"])
def test_cell_decoding_changes_the_output(decoder):
    model = small_model(decoder)
    lr = lr_crop()
    coord, cell = grid_queries(1, (48, 40))
    with torch.no_grad():
        features = model.encode(lr)
        fine = model.query(features, coord, cell)
        coarse = model.query(features, coord, cell * 3)
    assert (fine - coarse).abs().max() > 1e-4
    # cell_clamp only changes scales above the clamp
    assert torch.equal(upscale(model, lr, (48, 40), cell_clamp=2.0), upscale(model, lr, (48, 40)))
    assert not torch.equal(upscale(model, lr, (120, 100), cell_clamp=2.0), upscale(model, lr, (120, 100)))


@pytest.mark.parametrize(("decoder", "encoder"), BACKBONES)
def test_one_l1_step_reaches_every_parameter(decoder, encoder):
    model = small_model(decoder, encoder)
    hr = lr_crop("barbara", kind="X2", top=16, left=16, h=48, w=40)  # the same region
    lr = lr_crop("barbara", kind="X4", h=24, w=20)
    coord, cell = grid_queries(1, (48, 40))
    idx = torch.randperm(coord.shape[1])[:500]
    gt = hr.flatten(2).transpose(1, 2)[:, idx]
    loss = (model(lr, coord[:, idx], cell[:, idx]) - gt).abs().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing


@pytest.mark.parametrize("scale", [2.0, 3.5, 12.0])
@pytest.mark.parametrize(("decoder", "encoder"), BACKBONES)
def test_upscale_real_image_at_non_integer_and_large_scales(decoder, encoder, scale):
    model = small_model(decoder, encoder)
    lr = lr_crop("pepper", top=40, left=40, h=21, w=17)
    size = output_size((21, 17), scale)
    sr = model.upscale(lr, size, chunk_size=8192)
    assert sr.shape == (1, 3, *size) and size == (round(21 * scale), round(17 * scale))
    assert sr.min() >= 0 and sr.max() <= 1 and torch.isfinite(sr).all()


def test_lte_with_silent_decoder_is_bilinear_upsampling():
    """LTE's skip: with the MLP's last layer zeroed, upscaling a real image is bilinear interpolation."""
    model = small_model("lte")
    last = model.imnet.layers[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    lr = lr_crop("face", h=20, w=20)
    sr = model.upscale(lr, (70, 70))
    bilinear = torch.nn.functional.interpolate(lr, size=(70, 70), mode="bilinear", align_corners=False)
    torch.testing.assert_close(sr, bilinear, atol=1e-6, rtol=0)


def test_bad_upscale_arguments():
    model = small_model("liif")
    lr = lr_crop()
    with pytest.raises(ValueError, match="size"):
        upscale(model, lr, (0, 10))
    with pytest.raises(ValueError, match="B×3"):
        upscale(model, lr[:, :1], (30, 30))
    with pytest.raises(ValueError, match="cell_clamp"):
        upscale(model, lr, (30, 30), cell_clamp=float("nan"))
