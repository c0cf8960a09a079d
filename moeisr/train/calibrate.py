"""Post-training calibration of inference knobs that need statistics of training images.

LMF's CMSR needs a scale-to-mean table measured on training images (`moeisr.models.lmf.cmsr.build_cmsr_table`).
The official code builds it in a separate step (`init_cmsr.py`) and writes it into the test config; here it is
measured once when a run's weights are bundled and stored in the checkpoint's spec (`cmsr_spec.table`), so the
bundle stays self-describing and the knob `cmsr_mse` works on it with no extra file.

OUR CHOICE (the official step uses its own DIV2K training images): the first `calibrate.images` images (default
8) of the experiment's first training source, MATLAB-bicubic downscaled by `calibrate.downscale` (default ×4), as
LR inputs; the smoke profile takes one image at ×8. CMSR stays off by default (`cmsr_mse` None), so the main grid's
default rows are LMF's plain output.
"""

from __future__ import annotations

import torch

from moeisr.config import Experiment
from moeisr.data.degrade import downsample
from moeisr.data.train import TrainImages
from moeisr.models.base import compute_knob


def needs_calibration(model: torch.nn.Module) -> bool:
    """Whether bundling `model` must measure a knob table first (an LMF model without a calibrated CMSR table)."""
    return compute_knob(model) == "cmsr_mse" and "table" not in (model.spec["args"].get("cmsr_spec") or {})


def cmsr_calibration_images(experiment: Experiment) -> list[torch.Tensor]:
    """LR calibration images: the first `calibrate.images` images of the experiment's first training source, each
    1×3×h×w in [0, 1], MATLAB-bicubic downscaled by `calibrate.downscale` (8-bit levels, as benchmark LR are)."""
    options = experiment.spec.calibrate
    images = TrainImages(experiment.data.train_sets[:1], limit=options.images)
    return [downsample(images[i], options.downscale).unsqueeze(0) for i in range(len(images))]


@torch.inference_mode()
def calibrate_cmsr(model, experiment: Experiment) -> dict:
    """The `cmsr_spec` to store in `model`'s checkpoint: {"table": CMSRTable.to_dict(), "mse_threshold": None}
    measured on `cmsr_calibration_images(experiment)` (CMSR off by default; the knob turns it on)."""
    from moeisr.models.lmf.cmsr import build_cmsr_table

    was_training = model.training
    model.eval()
    try:
        table = build_cmsr_table(model, cmsr_calibration_images(experiment))
    finally:
        model.train(was_training)
    table.meta.update(source=list(experiment.data.train_sets[:1]), downscale=experiment.spec.calibrate.downscale)
    return {"table": table.to_dict(), "mse_threshold": None}
