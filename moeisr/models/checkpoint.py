"""Checkpoints: our format, the official LIIF/LTE format, weights-only loading, atomic saving.

Ours: `{"format": "moeisr", "format_version": 1, "model": {"name", "args", "sd"}, "train_state": {...},
"meta": {...}}`. Official LIIF/LTE: `{"model": {"name", "args", "sd"}, "optimizer": ..., "epoch": ...}`.
Both hold a model spec plus its state dict, so both load through `load_model`. Files are always read
with `torch.load(..., weights_only=True)`: a checkpoint can never run code.
"""

from __future__ import annotations

import copy
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import moeisr.models  # noqa: F401  (registers every model name)
from moeisr.errors import UserError
from moeisr.io import atomic_torch_save
from moeisr.models.base import ImplicitSR, prepare_for_inference
from moeisr.models.moe.moeisr import MoEISR
from moeisr.registry import models

FORMAT = "moeisr"
FORMAT_VERSION = 1


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """Read a checkpoint file (ours or official) as a dict; UserError if it is not a readable checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass the path to a .pth file")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of files it then refuses; the refusal is what matters
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Unsupported global" in message:  # a reference to a class or function: code would run
            raise _unsafe_checkpoint(path, message) from None
        if "Weights only load failed" in message:  # not a pickle of plain data (junk, or an exotic pickle)
            detail = " ".join(message.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].split())
            raise UserError(
                f"checkpoint {path} cannot be read as weights ({detail[:200] or 'not plain data'}); is it a "
                "complete torch .pth file?"
            ) from None
        raise _unreadable_checkpoint(path, exc) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _unreadable_checkpoint(path, exc) from None
    if not isinstance(obj, Mapping):
        raise UserError(f"checkpoint {path} is not a checkpoint (a {type(obj).__name__}, not a dict)")
    if obj.get("format", FORMAT) != FORMAT:
        raise UserError(f"checkpoint {path} has unknown format {obj.get('format')!r}")
    if obj.get("format") == FORMAT and obj.get("format_version", 0) > FORMAT_VERSION:
        raise UserError(
            f"checkpoint {path} has format_version {obj['format_version']}; this moeisr reads up to "
            f"{FORMAT_VERSION}, please upgrade moeisr"
        )
    spec = obj.get("model")
    if not isinstance(spec, Mapping) or not {"name", "sd"} <= set(spec):
        raise UserError(f"checkpoint {path} has no model spec (expected a 'model' entry with 'name', 'args', 'sd')")
    return dict(obj)


def _unreadable_checkpoint(path: Path, exc: BaseException) -> UserError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"checkpoint {path} cannot be read ({reason[:300]}); is it a complete torch .pth file?")


def _unsafe_checkpoint(path: Path, message: str) -> UserError:
    """The refusal of a pickle that only a full (code-running) unpickler could load. torch's own message
    suggests weights_only=False, which is exactly what must not be done with an untrusted file."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    what = f"a reference to {found[1]}" if found else "a reference to a Python object"
    return UserError(
        f"checkpoint {path} refused: it holds {what}, and unpickling it could run arbitrary code; moeisr loads "
        "weights only (tensors, numbers, strings, lists, dicts). Use a checkpoint written by moeisr or the "
        "official LIIF/LTE code, from a source you trust"
    )


def model_from_spec(spec: Mapping[str, Any], source: str = "spec") -> nn.Module:
    """Build `spec` ({"name", "args", "sd"?}) and load its state dict strictly. Errors name `source`."""
    try:
        model = models.make({"name": spec["name"], "args": spec.get("args") or {}})
    except KeyError as exc:
        raise UserError(f"{source}: {exc.args[0] if exc.args else exc}") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"{source}: cannot build model {spec['name']!r} ({exc})") from None
    if "sd" in spec:
        try:
            model.load_state_dict(spec["sd"], strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())
            raise UserError(f"{source}: weights do not match model {spec['name']!r}: {detail[:400]}") from None
    return model


def load_model(path: str | os.PathLike, map_location="cpu") -> nn.Module:
    """Load a checkpoint (ours or the official LIIF/LTE format) as a model in eval mode on `map_location`.

    The model remembers its spec (`model.spec`) and, for implicit models, exposes `upscale(lr, size)`.
    LIIF/LTE models come prepared for inference (`prepare_for_inference`: channels-last encoder activations
    when gradients are off, outputs within float rounding of the plain model): an inference setting only,
    the parameters and their layout are the checkpoint's, so state dicts copied from the model (e.g. to start
    a training run from it, or to re-save it) are unchanged. MoEISR models are not: their routing is a
    discontinuous function of the features, and a rounding-level change of the features flips the expert of
    a pixel whose logits sit on a tie (a knob from `knob_for_budget` always puts one there), which changes
    that pixel by far more than 1e-5; call `prepare_for_inference` on them explicitly to accept that.
    """
    ckpt = read_checkpoint(path, map_location=map_location)
    model = model_from_spec(ckpt["model"], source=f"checkpoint {path}")
    if not hasattr(model, "spec"):
        model.spec = {"name": ckpt["model"]["name"], "args": copy.deepcopy(ckpt["model"].get("args") or {})}
    if isinstance(map_location, (str, torch.device)):
        model = model.to(map_location)
    if isinstance(model, ImplicitSR) and not isinstance(model, MoEISR):
        return prepare_for_inference(model)  # the fast path by default for `moeisr sr`, evaluation, the API
    return model.eval()


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    spec: Mapping[str, Any] | None = None,
    train_state: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Save `model` in our format, atomically (temp file in the same folder, then `os.replace`).

    `spec` ({"name", "args"}) defaults to `model.spec`. `train_state` (optimizer/scheduler state dicts,
    epoch, ...) and `meta` (commit, config hash, ...) must be weights-only loadable (tensors, plain
    containers, numbers, strings). Returns the path.
    """
    spec = spec if spec is not None else getattr(model, "spec", None)
    if spec is None or "name" not in spec:
        raise ValueError("save_checkpoint needs a spec ({'name', 'args'}) or a model with a .spec")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {"name": spec["name"], "args": copy.deepcopy(dict(spec.get("args") or {})), "sd": model.state_dict()},
        "meta": dict(meta or {}),
    }
    if train_state is not None:
        payload["train_state"] = dict(train_state)
    return atomic_torch_save(payload, path)
