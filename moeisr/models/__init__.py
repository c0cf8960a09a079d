"""Models: encoders, implicit decoders, the MoE wrapper and checkpoints.

Importing this package registers every model in `moeisr.registry.models`, so that a spec or a
checkpoint can be built by name.
"""

from moeisr.models import decoders, encoders, lmf, mlp, moe  # noqa: F401  (registers the models)
from moeisr.models.base import ImplicitSR, upscale

__all__ = ["ImplicitSR", "upscale"]
