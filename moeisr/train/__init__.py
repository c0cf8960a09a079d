"""Training: the loop, learning-rate schedules, resumable atomic checkpoints and DDP.

`train(experiment, run_dir, resume=False, device="cpu", progress=True, init=None) -> final checkpoint path`
is the entry point (the CLI's `moeisr train` calls it); see `moeisr.train.loop` for the loss and the
routing settings, `moeisr.train.state` for the run directory, `moeisr.train.sampler` for the data
order that makes resuming bit-identical, and `moeisr.train.distributed` for torchrun/DDP.
"""

from moeisr.train.loop import TrainingInterrupted, build_model, train, training_model_spec
from moeisr.train.schedules import lr_at
from moeisr.train.state import default_parent_checkpoint

__all__ = ["TrainingInterrupted", "build_model", "default_parent_checkpoint", "lr_at", "train", "training_model_spec"]
