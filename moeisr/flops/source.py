"""What `moeisr flops` measures: a model from a checkpoint, a model spec or an experiment spec."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml
from torch import nn

from moeisr.errors import UserError

SPEC_SUFFIXES = (".yaml", ".yml")
# weights of a model built from a spec are random; a fixed seed makes an untrained mapper's routing reproducible
SPEC_SEED = 0
KNOB_WORDS = {"cheapest": math.inf, "deepest": -math.inf}


def parse_knob(text: str) -> float:
    """A routing knob: a float, 'inf'/'-inf', or 'cheapest' (+inf) / 'deepest' (-inf)."""
    word = str(text).strip().lower()
    if word in KNOB_WORDS:
        return KNOB_WORDS[word]
    try:
        knob = float(word)
    except ValueError:
        raise UserError(f"--routing-knob {text!r} is not a number, inf, -inf, 'cheapest' or 'deepest'") from None
    if math.isnan(knob):
        raise UserError("--routing-knob is NaN; use a number, inf (all cheapest) or -inf (all deepest)")
    return knob


def read_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(exc).split())[:200]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc})") from None


def model_spec_from_yaml(path: str | os.PathLike, profile: str = "cpu") -> dict:
    """The {name, args} model spec in a YAML file: a model spec file itself, or an experiment spec
    (anything with a `model:` section, loaded with `moeisr.config.load_experiment(path, profile)`)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist; pass a checkpoint (.pth), a model spec or an experiment (.yaml)")
    doc = read_yaml(path)
    if isinstance(doc, Mapping) and "model" in doc:
        from moeisr.config import load_experiment

        spec = load_experiment(path, profile).model
        return {"name": spec.name, "args": dict(spec.args)}
    if isinstance(doc, Mapping) and "name" in doc and set(doc) <= {"name", "args"}:
        args = doc.get("args") or {}
        if not isinstance(args, Mapping):
            raise UserError(f"{path}: 'args' must be a mapping of model arguments")
        return {"name": doc["name"], "args": dict(args)}
    raise UserError(f"{path}: neither a model spec ({{name, args}}) nor an experiment spec (with a 'model:' section)")


def build_from_spec(spec: Mapping, source: str, seed: int = SPEC_SEED) -> nn.Module:
    """Build an untrained model from a {name, args} spec with a fixed seed (the global RNG is left untouched)."""
    from moeisr.models.checkpoint import model_from_spec

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model_from_spec({"name": spec["name"], "args": spec.get("args") or {}}, source=source)


def load_source(path: str | os.PathLike, profile: str = "cpu", device: str = "cpu") -> tuple[nn.Module, bool]:
    """A model in eval mode from a checkpoint (.pth, ours or official) or a spec (.yaml / .yml).

    Returns (model, trained): trained is False for a spec (random weights, seed `SPEC_SEED`).
    """
    path = Path(path)
    if path.suffix.lower() in SPEC_SUFFIXES:
        spec = model_spec_from_yaml(path, profile)
        return build_from_spec(spec, source=str(path)).to(device).eval(), False
    from moeisr.models.checkpoint import load_model

    return load_model(path, map_location=device), True
