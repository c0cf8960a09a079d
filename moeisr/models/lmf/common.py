"""What LM-LIIF and LM-LTE share: the latent state at LR resolution and the modulated render at HR resolution.

LMF (He and Jin, CVPR 2024) splits the decoder in two:

- the **latent MLP** (`hypernet`) runs once per LR pixel. Its input is built from the encoder features and the
  cell (so it is computed once per image and output scale); its output holds the modulations of every hidden
  layer of the render MLP and, with `mod_input`, a compressed latent code that replaces the features as the
  render MLP's input;
- the **render MLP** (`imnet`, `moeisr.models.lmf.render.ModulatedMLP`, 16 wide) runs per query and
  local-ensemble shift, on the latent code of the LR pixel the shift picks plus the relative coordinate (and
  cell), with that pixel's modulations.

`LatentState` is the per-(image, cell) result of the latent MLP. It depends on the cell, which `encode(lr)` does
not know, so `query` builds it at its first call and caches it in the features dict under "lmf_latent",
keyed by the cell; later queries with the same cell (all chunks of an `upscale`) reuse it. One cell per image:
the cell of the image's first query (official: LR pixel i uses the cell of query i, which is the same value
whenever an image's queries share one cell, as in `upscale` and in our training sampler).

The local-ensemble geometry (nearest cells, relative coordinates, area weights) is the one of LIIF and LTE
(`moeisr.models.decoders.local_grid`), so the picked cells agree with the official code bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from moeisr.models.base import Decoder, Features, ImplicitSR, denormalise
from moeisr.models.decoders.local_grid import combine, nearest_cells
from moeisr.models.lmf.render import ModulatedMLP, ModulationTables

LATENT_KEY = "lmf_latent"


@dataclass
class LatentState:
    """The latent MLP's output for one batch of images at one cell.

    key: B×2, the cell it was computed for. mods: the render MLP's modulation tables (P = B·h·w rows).
    inp_table: P×W, the per-LR-pixel part of the render input (LM-LIIF: the latent code; LM-LTE: coef|freq).
    mod_half: P×M, the official `mod[:, mod_dim // 2 : mod_dim]` channels (the shifts when both scale and
    shift are modulated), kept for CMSR's modulation mean.
    """

    key: torch.Tensor
    mods: ModulationTables
    inp_table: torch.Tensor
    mod_half: torch.Tensor
    lr_size: tuple[int, int]
    cache: dict = field(default_factory=dict)

    def mod_mean(self) -> torch.Tensor:
        """B×h×w mean absolute modulation of each LR pixel (CMSR's `mod_mean`), computed once."""
        if "mod_mean" not in self.cache:
            h, w = self.lr_size
            self.cache["mod_mean"] = self.mod_half.abs().mean(dim=-1).view(-1, h, w)
        return self.cache["mod_mean"]


def check_render_spec(imnet_spec: Mapping, hypernet_spec: Mapping | None) -> None:
    if imnet_spec is None or hypernet_spec is None:
        raise ValueError("LMF needs imnet_spec (the render MLP) and hypernet_spec (the latent MLP)")
    if imnet_spec.get("name") not in ("lmmlp",):
        raise ValueError(f"LMF's imnet_spec must be an 'lmmlp' (modulated MLP), got {imnet_spec.get('name')!r}")


class LatentModulatedSR(ImplicitSR):
    """Base of LM-LIIF and LM-LTE. Subclasses set `encoder`, `hypernet`, `imnet`, `local_ensemble`, `cell_decode`,
    `mod_input`, `spec`, and implement `encode`, `_latent_output` and `_render_input`."""

    compute_knob_name = "cmsr_mse"  # CMSR's MSE threshold, LMF's counterpart of the routing knob

    def finish_spec(self, name: str, args: dict, cmsr_spec) -> None:
        """Set `self.spec` = {name, args} (with an official `cmsr_spec`, if given, kept in the args and applied as
        fixed CMSR thresholds)."""
        if cmsr_spec is not None:
            args["cmsr_spec"] = copy.deepcopy(cmsr_spec)
        self.spec = {"name": name, "args": args}
        if cmsr_spec is not None:
            from moeisr.models.lmf.cmsr import apply_official_cmsr_spec

            apply_official_cmsr_spec(self, cmsr_spec)

    hypernet: torch.nn.Module
    imnet: ModulatedMLP
    local_ensemble: bool
    cell_decode: bool
    mod_input: bool

    # -------------------------------------------------------------- CMSR settings (inference only, not saved)
    @property
    def cmsr_table(self):
        """The CMSR table used by `upscale` (a `moeisr.models.lmf.cmsr.CMSRTable` or fixed official thresholds),
        None = no CMSR. An inference setting: not in the spec or the state dict."""
        return self.__dict__.get("_cmsr_table")

    @cmsr_table.setter
    def cmsr_table(self, table) -> None:
        from moeisr.models.lmf.cmsr import as_threshold_source

        self.__dict__["_cmsr_table"] = None if table is None else as_threshold_source(table)

    @property
    def cmsr_mse(self) -> float | None:
        """CMSR's knob: the MSE (official units, images in [-1, 1]) a pixel may lose by being rendered at a lower
        scale; None or 0 = CMSR off (the default: the official output exactly)."""
        return self.__dict__.get("_cmsr_mse")

    @cmsr_mse.setter
    def cmsr_mse(self, value: float | None) -> None:
        if value is not None:
            value = float(value)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"cmsr_mse must be None or a finite number >= 0, got {value!r}")
        self.__dict__["_cmsr_mse"] = value

    # ----------------------------------------------------------------------------------------- latent
    def mod_channels(self) -> int:
        """The official `mod_dim`: modulation channels of the latent MLP output."""
        return self.imnet.mod_dim

    def _latent_output(self, features: Features, rel_cell: torch.Tensor) -> torch.Tensor:
        """The latent MLP's output P×out for every LR pixel (rows b·h·w + i·w + j), rel_cell B×2."""
        raise NotImplementedError

    def _render_table(self, features: Features, out: torch.Tensor) -> torch.Tensor:
        """The per-LR-pixel part of the render input P×W, from the latent output `out` (or the features)."""
        raise NotImplementedError

    def latent_state(self, features: Features, cell: torch.Tensor) -> LatentState:
        """The LatentState for B×Q×2 (or B×2) `cell`, from the features' cache when it was built for that cell."""
        key = cell[:, 0] if cell.dim() == 3 else cell
        cached = features.get(LATENT_KEY) if isinstance(features, Mapping) else None
        if isinstance(cached, LatentState) and cached.key.shape == key.shape and torch.equal(cached.key, key):
            return cached
        h, w = features["feat"].shape[-2:]
        rel_cell = key * torch.tensor([h, w], device=key.device, dtype=key.dtype)
        out = self._latent_output(features, rel_cell)
        mod_dim = self.mod_channels()
        state = LatentState(
            key=key.detach().clone(),
            mods=self.imnet.tables_from(out[:, :mod_dim]),
            inp_table=self._render_table(features, out),
            mod_half=out[:, mod_dim // 2 : mod_dim],
            lr_size=(h, w),
        )
        if isinstance(features, dict):
            features[LATENT_KEY] = state
        return state

    # ----------------------------------------------------------------------------------------- render
    def _render_input(
        self, state: LatentState, pixels: torch.Tensor, rel_coord: torch.Tensor, rel_cell: torch.Tensor
    ) -> torch.Tensor:
        """The render MLP's input N×in_dim for N = B·Q·K rows: `pixels` N (rows of the LR tables), `rel_coord`
        B×Q×K×2, `rel_cell` B×Q×2 (the cell in LR-cell units)."""
        raise NotImplementedError

    def _skip(self, features: Features, coord: torch.Tensor) -> torch.Tensor | None:
        """What is added to the blended prediction (LM-LTE: the bilinear upsampling of the input); None = nothing."""
        return None

    def render(self, features: Features, state: LatentState, coord: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
        """Decode B×Q×2 `coord` with the render MLP modulated by `state`; `cell` B×Q×2 is the render input's cell
        (CMSR renders lower levels with their own cell but the target's modulations). → B×Q×3 in [0, 1]."""
        feat = features["feat"]
        B, _, h, w = feat.shape
        Q = coord.shape[1]
        rows, cols, rel_coord = nearest_cells(coord, features["index_map"], self.local_ensemble)
        K = rows.shape[-1]
        offset = (torch.arange(B, device=coord.device) * (h * w)).view(B, 1, 1)
        pixels = (rows * w + cols + offset).reshape(-1)
        rel_cell = cell * torch.tensor([h, w], device=cell.device, dtype=cell.dtype)
        inp = self._render_input(state, pixels, rel_coord, rel_cell)
        pred = self.imnet(inp, state.mods, pixels).view(B, Q, K, -1)
        out = combine(pred, rel_coord)
        skip = self._skip(features, coord)
        if skip is not None:
            out = out + skip
        return denormalise(out)

    def query(
        self, features: Mapping[str, torch.Tensor], coord: torch.Tensor, cell: torch.Tensor, mlp: Decoder | None = None
    ) -> torch.Tensor:
        """coord, cell: B×Q×2 → B×Q×3 RGB in the [0, 1] range (not clamped). The modulations are those of each
        image's first query's cell (module docstring). `mlp` must be None: the render MLP needs modulations."""
        if mlp is not None:
            raise ValueError(f"{type(self).__name__}: query(mlp=...) is not supported (the render MLP is modulated)")
        return self.render(features, self.latent_state(features, cell), coord, cell)

    def upscale(self, lr: torch.Tensor, size: tuple[int, int], *, cmsr_mse: float | None = None, **options):
        """`ImplicitSR.upscale` (lr B×3×h×w in [0, 1] → B×3×H×W in [0, 1]), with CMSR when a table is set
        (`cmsr_table`) and the knob (`cmsr_mse`, or this call's `cmsr_mse`) is positive. options: chunk_size,
        progress, cell_clamp, precision, as in `moeisr.models.base.upscale` ("bf16" reaches the latent MLP only; the
        render MLP runs in fp32; no progress bar on the CMSR path).
        """
        from moeisr.models.lmf.cmsr import upscale_with_cmsr

        return upscale_with_cmsr(self, lr, size, self.cmsr_mse if cmsr_mse is None else cmsr_mse, **options)
