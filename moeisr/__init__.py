"""moeisr: MoEISR and its implicit SR backbones (LIIF, LTE), with data, metrics, FLOPs and drivers.

Tensor convention at every public boundary: images are B×3×H×W float tensors in [0, 1];
coordinates are (row, col) in [-1, 1] at pixel centres.
"""

__version__ = "0.1.0"


def load_model(path, map_location="cpu"):
    """Load a checkpoint (ours or the official LIIF/LTE format) as a ready-to-use model.

    The model exposes `upscale(lr, size)`: lr is B×3×h×w in [0, 1]; the result is B×3×H×W in [0, 1].
    """
    from moeisr.models.checkpoint import load_model as _load

    return _load(path, map_location=map_location)


__all__ = ["__version__", "load_model"]
