"""Closed-form costs of the models' parts, in MACs (1 multiply-add = 1 FLOP, as fvcore).

Convolutions are counted over every output pixel with the full kernel (zero-padded borders included, as
fvcore does); bias adds and ReLUs are not counted. Functions with `elementwise=True` add the element-wise
arithmetic of our fvcore handles (1 FLOP per element: residual adds, `res_scale` multiplies), so that
they equal the encoder component of `moeisr.flops.count` exactly. The formulas are written out in
docs/flops.md.
"""

from __future__ import annotations

from collections.abc import Sequence

LIIF_HIDDEN = (256, 256, 256, 256)
LTE_HIDDEN = (256, 256, 256)
ENSEMBLE = 4  # local-ensemble shifts per query (LIIF with local_ensemble, LTE always)
BILINEAR_TAPS = 4


def mlp_macs(in_dim: int, hidden_list: Sequence[int], out_dim: int = 3) -> int:
    """MACs of one Linear/ReLU MLP evaluation: Σ in·out over its Linear layers."""
    dims = [int(in_dim), *map(int, hidden_list), int(out_dim)]
    return sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=False))


def conv_macs(h: int, w: int, in_ch: int, out_ch: int, kernel_size: int = 3) -> int:
    """A stride-1 'same' convolution on an h×w map: h·w·k²·in·out."""
    return h * w * kernel_size * kernel_size * in_ch * out_ch


def edsr_encoder(
    h: int, w: int, n_resblocks: int = 16, n_feats: int = 64, in_channels: int = 3, elementwise: bool = False
) -> int:
    """EDSR encoder (LIIF's no_upsampling variant: head conv, resblocks, body conv, global skip) on h×w.

    MACs = h·w·(9·3·C + (2·n + 1)·9·C²). elementwise=True adds h·w·C·(2n + 1): each resblock's
    `mul(res_scale)` and residual add, and the global skip. EDSR-baseline: n = 16, C = 64; EDSR: 32, 256.
    """
    C, n = n_feats, n_resblocks
    macs = conv_macs(h, w, in_channels, C) + (2 * n + 1) * conv_macs(h, w, C, C)
    return macs + (h * w * C * (2 * n + 1) if elementwise else 0)


def rdn_encoder(
    h: int,
    w: int,
    G0: int = 64,
    D: int = 16,
    C: int = 8,
    G: int = 64,
    kernel_size: int = 3,
    in_channels: int = 3,
    elementwise: bool = False,
) -> int:
    """RDN encoder (no upsampler) on h×w; defaults = config B (D=16 blocks, C=8 convs, growth G=64).

    MACs = h·w·[k²·3·G0 + k²·G0² + D·(Σ_{c<C} k²·(G0 + c·G)·G + (G0 + C·G)·G0) + D·G0·G0 + k²·G0²]
    (SFENet1, SFENet2, the dense convs and 1×1 fusion of every block, the 1×1 and k×k global fusion).
    elementwise=True adds h·w·G0·(D + 1): the block residuals and the global skip.
    """
    k = kernel_size
    block = sum(conv_macs(h, w, G0 + c * G, G, k) for c in range(C)) + conv_macs(h, w, G0 + C * G, G0, 1)
    macs = (
        conv_macs(h, w, in_channels, G0, k)
        + conv_macs(h, w, G0, G0, k)
        + D * block
        + conv_macs(h, w, D * G0, G0, 1)
        + conv_macs(h, w, G0, G0, k)
    )
    return macs + (h * w * G0 * (D + 1) if elementwise else 0)


def liif_in_dim(feat_dim: int = 64, feat_unfold: bool = True, cell_decode: bool = True) -> int:
    """LIIF's MLP input: the (3×3-unfolded) feature, the relative coordinate (2) and the cell (2)."""
    return feat_dim * (9 if feat_unfold else 1) + 2 + (2 if cell_decode else 0)


def liif_decoder_per_pixel(
    feat_dim: int = 64,
    hidden_list: Sequence[int] = LIIF_HIDDEN,
    feat_unfold: bool = True,
    cell_decode: bool = True,
    local_ensemble: bool = True,
    out_dim: int = 3,
) -> int:
    """LIIF's MLP MACs per output pixel: K · Σ in·out, K = 4 with local ensemble.

    Default (64-ch encoder, [256]×4): 4 · (580·256 + 3·256·256 + 256·3) = 1,383,424.
    """
    k = ENSEMBLE if local_ensemble else 1
    return k * mlp_macs(liif_in_dim(feat_dim, feat_unfold, cell_decode), hidden_list, out_dim)


def expert_per_pixel(in_dim: int, hidden_list: Sequence[int], out_dim: int = 3, ensemble: int = ENSEMBLE) -> int:
    """One MoEISR expert's MACs per output pixel routed to it: K · Σ in·out (all K shifts go to it)."""
    return ensemble * mlp_macs(in_dim, hidden_list, out_dim)


def routed_decoder(
    pixels_per_expert: Sequence[int],
    expert_hidden_lists: Sequence[Sequence[int]],
    in_dim: int,
    out_dim: int = 3,
    ensemble: int = ENSEMBLE,
) -> int:
    """MoEISR's decoder MACs for a routing: Σ_j n_j · K · Σ in·out of expert j."""
    return sum(
        n * expert_per_pixel(in_dim, hidden, out_dim, ensemble)
        for n, hidden in zip(pixels_per_expert, expert_hidden_lists, strict=True)
    )


def mapper(
    h: int,
    w: int,
    in_channels: int = 64,
    n_experts: int = 4,
    n_layers: int = 3,
    width: int = 64,
    use_cell: bool = False,
) -> int:
    """MoEISR's mapper CNN on an h×w feature map: 3×3 convs in → width → … → J, once per image (per scale
    with use_cell, which adds 2 input channels). Default: h·w·9·(64·64 + 64·64 + 64·J)."""
    dims = [in_channels + (2 if use_cell else 0), *([width] * (n_layers - 1)), n_experts]
    return sum(conv_macs(h, w, a, b) for a, b in zip(dims[:-1], dims[1:], strict=False))


def logit_sampling(pixels: int, n_experts: int) -> int:
    """Bilinear sampling of the J mapper logits at every output pixel: 4·J per pixel."""
    return BILINEAR_TAPS * n_experts * pixels


def lte(
    lr_size: tuple[int, int],
    out_size: tuple[int, int],
    feat_dim: int = 64,
    hidden_dim: int = 256,
    hidden_list: Sequence[int] = LTE_HIDDEN,
    out_dim: int = 3,
) -> dict[str, int]:
    """LTE's parts beyond the encoder for one image, by component (FLOPs in our convention).

    With h×w LR pixels, Q = H·W output pixels, C = feat_dim, d = hidden_dim:
    - "coef_freq": the two 3×3 convs at LR resolution, 2 · h·w·9·C·d MACs (in `other`);
    - "phase": the Linear(2 → d/2) on the cell, once per query: Q · d MACs (in `other`);
    - "decoder": the MLP on every shift: Q · 4 · Σ in·out with in = d;
    - "cos_sin": cos and sin of the d/2 frequencies of each shift, 1 FLOP each: Q · 4 · d;
    - "skip": bilinear upsampling of the 3-channel input, Q · 3 · 4.
    """
    (h, w), (H, W) = lr_size, out_size
    q = H * W
    return {
        "coef_freq": 2 * conv_macs(h, w, feat_dim, hidden_dim),
        "phase": q * 2 * (hidden_dim // 2),
        "decoder": q * ENSEMBLE * mlp_macs(hidden_dim, hidden_list, out_dim),
        "cos_sin": q * ENSEMBLE * hidden_dim,
        "skip": q * 3 * BILINEAR_TAPS,
    }


def lte_basis_executed(hidden_dim: int = 256) -> int:
    """FLOPs of building one row of LTE's Fourier basis on the "as executed" path (`FourierInputs.basis`, in
    the scope of the MLP / expert that consumes it): per frequency j < d/2 the products f_2j·x and f_2j+1·y,
    their sum, + phase, ×π, cos, sin (7 per j), then ×coef on all d values: 4.5·d."""
    return 7 * (hidden_dim // 2) + hidden_dim


def liif_executed_per_input(in_dim: int, hidden_list: Sequence[int], n_tail: int = 4, out_dim: int = 3) -> int:
    """MACs per decoder input of a LIIF MLP / MoEISR-LIIF expert on the "as executed" path (`FactoredInputs`):
    the first layer's tail columns (rel_coord, cell) and the later layers. Default LIIF: 198,400."""
    dims = [int(in_dim), *map(int, hidden_list), int(out_dim)]
    return n_tail * dims[1] + sum(a * b for a, b in zip(dims[1:-1], dims[2:], strict=False))


def liif_projection(lr_pixels: int, in_dim: int, hidden_0: int, n_tail: int = 4) -> int:
    """The per-LR-pixel part of that first layer (a 3×3 conv of the features, once per image and MLP that
    decodes any query): lr_pixels · (in_dim − n_tail) · hidden_0."""
    return lr_pixels * (int(in_dim) - n_tail) * int(hidden_0)


# LMF (He and Jin, CVPR 2024), official EDSR-baseline configs: (render hidden_dim, hidden_depth, latent hidden)
LM_LIIF_RENDER = (16, 6)
LM_LIIF_LATENT_HIDDEN = (208,)
LM_LTE_RENDER = (16, 8)
LM_LTE_LATENT_HIDDEN = (288,)


def lmf_mod_dim(hidden_dim: int, hidden_depth: int, mod_scale: bool = True, mod_shift: bool = True) -> int:
    """Modulation channels of the latent MLP's output: hidden_dim · hidden_depth per modulated kind."""
    return hidden_dim * hidden_depth * (int(mod_scale) + int(mod_shift))


def lmf_render_per_input(
    in_dim: int, hidden_dim: int, hidden_depth: int, out_dim: int = 3, mod_scale: bool = True, mod_shift: bool = True
) -> int:
    """One render-MLP evaluation (one query and shift): Σ in·out MACs plus the modulations, 1 FLOP per hidden
    value for the multiply by (1 + scale) and 1 for the add of the shift."""
    return mlp_macs(in_dim, [hidden_dim] * hidden_depth, out_dim) + lmf_mod_dim(
        hidden_dim, hidden_depth, mod_scale, mod_shift
    )


def lm_liif(
    lr_size: tuple[int, int],
    out_size: tuple[int, int],
    feat_dim: int = 64,
    render: tuple[int, int] = LM_LIIF_RENDER,
    latent_hidden: Sequence[int] = LM_LIIF_LATENT_HIDDEN,
    feat_unfold: bool = True,
    cell_decode: bool = True,
    mod_input: bool = True,
    local_ensemble: bool = True,
) -> dict[str, int]:
    """LM-LIIF's parts beyond the encoder for one image, by component (FLOPs in our convention).

    With h×w LR pixels, Q = H·W output pixels, C = feat_dim, render MLP n wide and D deep, K = 4 shifts:
    - "latent": the latent MLP once per LR pixel, in = 9C (+2 cell), out = 2·n·D (+n with mod_input):
      h·w · Σ in·out. Default (C = 64): 2304 · (578·208 + 208·208) at 48×48;
    - "render": Q · K · (Σ in·out + 2·n·D), in = n (or C without mod_input) + 2 (+2 cell):
      default 4 · (20·16 + 5·16·16 + 16·3 + 2·16·6) = 7,360 per output pixel.
    """
    (h, w), (H, W) = lr_size, out_size
    n, depth = render
    latent_in = feat_dim * (9 if feat_unfold else 1) + (2 if cell_decode else 0)
    latent_out = lmf_mod_dim(n, depth) + (n if mod_input else 0)
    render_in = (n if mod_input else feat_dim) + 2 + (2 if cell_decode else 0)
    k = ENSEMBLE if local_ensemble else 1
    return {
        "latent": h * w * mlp_macs(latent_in, latent_hidden, latent_out),
        "render": H * W * k * lmf_render_per_input(render_in, n, depth),
    }


def lm_lte(
    lr_size: tuple[int, int],
    out_size: tuple[int, int],
    feat_dim: int = 64,
    hidden_dim: int = 128,
    render: tuple[int, int] = LM_LTE_RENDER,
    latent_hidden: Sequence[int] = LM_LTE_LATENT_HIDDEN,
    cell_decode: bool = True,
    mod_input: bool = True,
    local_ensemble: bool = True,
) -> dict[str, int]:
    """LM-LTE's parts beyond the encoder for one image, by component (FLOPs in our convention).

    With h×w LR pixels, Q = H·W output pixels, C = feat_dim, d = hidden_dim, render MLP n wide and D deep:
    - "coef_freq": LTE's two 3×3 convs at LR resolution, 2 · h·w·9·C·d (in `other`);
    - "phase": the latent phase Linear(2 → d/2), once per image: d (in `other`);
    - "imphase": the render phase Linear(2 → n/2), once per query: Q · n (in `other`, with mod_input);
    - "latent": the latent MLP once per LR pixel, in = d, out = 2·n·D (+2n with mod_input): h·w · Σ in·out;
    - "render": Q · K · (Σ in·out + 2·n·D), in = n (d without mod_input).
    """
    (h, w), (H, W) = lr_size, out_size
    n, depth = render
    q = H * W
    render_in = n if mod_input else hidden_dim
    latent_out = lmf_mod_dim(n, depth) + (2 * n if mod_input else 0)
    k = ENSEMBLE if local_ensemble else 1
    return {
        "coef_freq": 2 * conv_macs(h, w, feat_dim, hidden_dim),
        "phase": hidden_dim if cell_decode else 0,
        "imphase": q * render_in if cell_decode else 0,
        "latent": h * w * mlp_macs(hidden_dim, latent_hidden, latent_out),
        "render": q * k * lmf_render_per_input(render_in, n, depth),
    }
