"""Encoders and the MLP: official names, state-dict keys and shapes, feature shapes on a real image."""

import pytest
import torch
from test_models_support import lr_crop

import moeisr.models  # noqa: F401  (registration)
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
