"""LMF: Latent Modulated Functions (He and Jin, CVPR 2024) as models of the suite: LM-LIIF and LM-LTE.

A latent MLP at LR resolution produces, per LR pixel, the modulations (scale and shift) of a narrow render MLP
that runs per output pixel; CMSR renders weakly modulated regions at lower scales. See docs/lmf.md.

Importing this package registers `lm-liif` (official `lmliif`), `lm-lte` (official `lmlte`) and `lmmlp`.
"""

from moeisr.models.lmf.cmsr import CMSRTable, build_cmsr_table
from moeisr.models.lmf.common import LatentModulatedSR
from moeisr.models.lmf.lmliif import LMLIIF
from moeisr.models.lmf.lmlte import LMLTE
from moeisr.models.lmf.render import ModulatedMLP

__all__ = ["CMSRTable", "LMLIIF", "LMLTE", "LatentModulatedSR", "ModulatedMLP", "build_cmsr_table"]
