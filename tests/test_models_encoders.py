"""Encoders and the MLP: official names, state-dict keys and shapes, feature shapes on a real image; receptive
radii and tiled encoding (equal to the whole-image features)."""

import pytest
import torch
from test_models_support import lr_crop, small_model

import moeisr.models  # noqa: F401  (registration)
from moeisr.errors import UserError
from moeisr.models.base import ENCODE_TILE_SIZE, encode_tiled, normalise, tile_spans
from moeisr.registry import models


def official_edsr_keys(n_resblocks, n_feats):
    """Keys and shapes of LIIF's EDSR (no_upsampling) state dict, written out from its module tree."""
    keys = {f"{m}.{p}": s for m in ("sub_mean", "add_mean") for p, s in (("weight", (3, 3, 1, 1)), ("bias", (3,)))}
    keys.update({"head.0.weight": (n_feats, 3, 3, 3), "head.0.bias": (n_feats,)})
    for i in range(n_resblocks):
        for j in (0, 2):
            keys[f"body.{i}.body.{j}.weight"] = (n_feats, n_feats, 3, 3)
            keys[f"body.{i}.body.{j}.bias"] = (n_feats,)
    keys[f"body.{n_resblocks}.weight"] = (n_feats, n_feats, 3, 3)
    keys[f"body.{n_resblocks}.bias"] = (n_feats,)
    return keys


def official_rdn_keys(G0, D, C, G, k=3):
    keys = {"SFENet1.weight": (G0, 3, k, k), "SFENet1.bias": (G0,)}
    keys.update({"SFENet2.weight": (G0, G0, k, k), "SFENet2.bias": (G0,)})
    for i in range(D):
        for c in range(C):
            keys[f"RDBs.{i}.convs.{c}.conv.0.weight"] = (G, G0 + c * G, 3, 3)
            keys[f"RDBs.{i}.convs.{c}.conv.0.bias"] = (G,)
        keys[f"RDBs.{i}.LFF.weight"] = (G0, G0 + C * G, 1, 1)
        keys[f"RDBs.{i}.LFF.bias"] = (G0,)
    keys.update({"GFF.0.weight": (G0, D * G0, 1, 1), "GFF.0.bias": (G0,)})
    keys.update({"GFF.1.weight": (G0, G0, k, k), "GFF.1.bias": (G0,)})
    return keys


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_edsr_baseline_has_the_official_keys_and_feature_shape():
    enc = models.make({"name": "edsr-baseline", "args": {"no_upsampling": True}})
    assert shapes(enc) == official_edsr_keys(16, 64)
    assert enc.out_dim == 64
    lr = lr_crop(h=12, w=10)
    with torch.no_grad():
        assert enc((lr - 0.5) / 0.5).shape == (1, 64, 12, 10)


def test_edsr_alias_defaults_and_meanshift_is_not_trainable():
    enc = models.make({"name": "edsr", "args": {"n_resblocks": 2, "n_feats": 8}})
    assert shapes(enc) == official_edsr_keys(2, 8)
    assert enc.spec["args"]["res_scale"] == 0.1
    assert all("mean" not in name for name, _ in enc.named_parameters())
    assert torch.allclose(enc.state_dict()["sub_mean.bias"], -torch.tensor([0.4488, 0.4371, 0.4040]))


def test_rdn_config_b_has_the_official_keys():
    enc = models.make({"name": "rdn", "args": {"no_upsampling": True}})
    assert shapes(enc) == official_rdn_keys(64, 16, 8, 64)
    assert enc.out_dim == 64
    small = models.make({"name": "rdn", "args": {"G0": 16, "RDNconfig": "A", "D": 2}})
    assert shapes(small) == official_rdn_keys(16, 2, 6, 32)
    assert small.spec["args"]["D"] == 2 and "C" in small.spec["args"]


def test_upsampling_variants_are_refused():
    with pytest.raises(ValueError, match="no_upsampling"):
        models.make({"name": "edsr-baseline", "args": {"no_upsampling": False}})
    with pytest.raises(ValueError, match="no_upsampling"):
        models.make({"name": "rdn", "args": {"no_upsampling": False}})


def test_mlp_keys_and_leading_dims():
    mlp = models.make({"name": "mlp", "args": {"in_dim": 10, "out_dim": 3, "hidden_list": [16, 8]}})
    assert shapes(mlp) == {
        "layers.0.weight": (16, 10),
        "layers.0.bias": (16,),
        "layers.2.weight": (8, 16),
        "layers.2.bias": (8,),
        "layers.4.weight": (3, 8),
        "layers.4.bias": (3,),
    }
    x = torch.randn(2, 5, 4, 10)
    assert torch.equal(mlp(x), mlp(x.reshape(-1, 10)).view(2, 5, 4, 3))


def test_spec_rebuilds_the_same_architecture():
    enc = models.make({"name": "rdn", "args": {"G0": 8, "D": 1, "C": 1, "G": 4}})
    again = models.make(enc.spec)
    again.load_state_dict(enc.state_dict(), strict=True)


def test_receptive_radii_of_the_paper_encoders():
    """One pixel per 3×3 conv on the longest path: EDSR-baseline 1 + 2·16 + 1, RDN (B) 2 + 16·8 + 1."""
    assert models.make({"name": "edsr-baseline"}).receptive_radius == 34
    assert models.make({"name": "rdn"}).receptive_radius == 131


def _calls(module: torch.nn.Module) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []
    module.register_forward_pre_hook(lambda _, args: seen.append(tuple(args[0].shape[-2:])))
    return seen


@pytest.mark.parametrize("encoder", ["edsr-baseline", "rdn"])
def test_tiled_encoding_equals_the_whole_image(encoder, monkeypatch):
    """Overlapping tiles with the receptive radius as context give the untiled features (small tiles, so that
    interior tiles with context on all four sides are exercised); less context is visibly wrong."""
    torch.manual_seed(0)
    model = small_model("liif", encoder).eval()
    inp = normalise(lr_crop("baboon", top=10, left=12, h=40, w=37))
    with torch.no_grad():
        whole = model.encoder(inp)
        seen = _calls(model.encoder)
        tiled = encode_tiled(model.encoder, inp, 20)
    radius = model.encoder.receptive_radius
    rows, cols = tile_spans(40, 20, radius), tile_spans(37, 20, radius)
    assert len(rows) >= 4 and len(cols) >= 4 and len(seen) == len(rows) * len(cols)
    assert max(max(hw) for hw in seen) <= 21  # tiles of ~20 pixels a side, context included
    assert (tiled - whole).abs().max().item() <= 1e-5
    monkeypatch.setattr(type(model.encoder), "receptive_radius", property(lambda self: radius // 3))
    with torch.no_grad():
        short = encode_tiled(model.encoder, inp, 20)
    assert (short - whole).abs().max().item() > 1e-3


def test_encode_tiles_automatically_above_the_threshold():
    """`encode_tile_size` (default ENCODE_TILE_SIZE) switches tiling on for large inputs at inference only;
    the setting reaches a MoEISR's backbone; channels-last tiles give a channels-last map."""
    torch.manual_seed(0)
    moe = models.make({"name": "moeisr", "args": {"backbone_spec": small_model("lte").spec}}).eval()
    assert moe.backbone.encode_tile_size == ENCODE_TILE_SIZE == 660
    lr = lr_crop("zebra", h=30, w=26)
    with torch.no_grad():
        whole = moe.encode(lr)["feat"]
    moe.encode_tile_size = 16
    assert moe.backbone.encode_tile_size == 16
    seen = _calls(moe.backbone.encoder)
    with torch.no_grad():
        tiled = moe.encode(lr)["feat"]
    radius = moe.backbone.encoder.receptive_radius
    assert len(seen) == len(tile_spans(30, 16, radius)) * len(tile_spans(26, 16, radius)) > 4
    assert (tiled - whole).abs().max().item() <= 1e-5
    n_tiles = len(seen)
    moe.encode(lr)  # gradients on (training): never tiled
    assert len(seen) == n_tiles + 1 and seen[-1] == (30, 26)
    moe.channels_last = True
    with torch.no_grad():
        tiled = moe.encode(lr)["feat"]
    assert tiled.is_contiguous(memory_format=torch.channels_last) and (tiled - whole).abs().max().item() <= 1e-5
    moe.encode_tile_size = None
    with torch.no_grad():
        moe.encode(lr)
    assert seen[-1] == (30, 26)
    with pytest.raises(UserError, match="encode_tile_size"):
        moe.encode_tile_size = 0


@pytest.mark.parametrize(("n", "tile", "radius"), [(1024, 660, 131), (1024, 660, 34), (1536, 660, 131), (40, 20, 6)])
def test_tile_spans_cover_the_axis_with_tiles_of_the_given_size(n, tile, radius):
    spans = tile_spans(n, tile, radius)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(spans[:-1], spans[1:], strict=True))
    sides = [min(stop + radius, n) - max(start - radius, 0) for start, stop in spans]
    assert max(sides) <= tile + 1 and max(sides) - min(sides) <= 1  # equal tiles, context included
    if (n, tile) == (1024, 660):
        assert len(spans) == 2  # a 1024² image: 2×2 tiles (RDN: 643², EDSR-baseline: 546²)
    assert tile_spans(tile, tile, radius) == [(0, tile)]
