"""Run directories and resumable training state.

A run directory holds:

```
RUN_DIR/last.pt     the latest state: written at step 0, every train.ckpt_every steps, on SIGINT/SIGTERM
                    and at the end
RUN_DIR/final.pt    the state after optim.max_steps steps (same content as the last last.pt)
RUN_DIR/spec.yaml   the merged experiment spec, its profile and config hash (for humans)
RUN_DIR/log.csv     step, loss, l1, balance, lr, seconds, val_psnr
```

Checkpoints use our format (`moeisr.models.checkpoint.save_checkpoint`, written atomically) and are read
with `weights_only=True`, so their `train_state` holds only tensors and plain Python values:
step, optimizer and scheduler state dicts, the RNG states (torch CPU and CUDA as ByteTensors, Python's
`random` as a list, numpy's MT19937 as an int64 tensor), the data-order state, the config hash, the
full experiment spec and the elapsed training time.

A MoEISR experiment with `init_from: NAME` starts from NAME's final checkpoint, by default the sibling
run `RUN_DIR/../NAME/final.pt` (or an explicit `--init CKPT`).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moeisr.config import HASH_EXCLUDED, Experiment
from moeisr.errors import UserError
from moeisr.models.checkpoint import read_checkpoint

LAST = "last.pt"
FINAL = "final.pt"
SPEC_FILE = "spec.yaml"
LOG_FILE = "log.csv"
LOCK_NAME = ".train"  # FileLock adds ".lock": RUN_DIR/.train.lock


# ------------------------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """Every global RNG state, weights-only serialisable."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured (the CUDA part only when CUDA is in use and the device count matches)."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    keys = npy["keys"].numpy().astype(np.uint32)
    np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), Python's random and numpy's global generator."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


# ------------------------------------------------------------------------------------- run dirs


def _visible_entries(run_dir: Path) -> list[Path]:
    return sorted(p for p in run_dir.iterdir() if not p.name.startswith("."))


def check_fresh_run_dir(run_dir: Path) -> None:
    """UserError if `run_dir` exists and holds anything (hidden leftovers such as lock files aside)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file; choose another --out")
    if run_dir.is_dir() and _visible_entries(run_dir):
        raise UserError(
            f"run directory {run_dir} already exists and is not empty; pass --resume to continue it, "
            "or choose another --out"
        )


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete half-written checkpoint temp files (`.<name>.<random>.tmp`) left by a killed run.

    Only call this while holding the run directory's lock: no other process may be writing.
    """
    for name in (LAST, FINAL):
        for tmp in run_dir.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _spec_diff(saved: Mapping, current: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two spec dicts."""
    keys = sorted(set(saved) | set(current), key=str)
    out = []
    for key in keys:
        dotted = f"{prefix}{key}"
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _spec_diff(a, b, dotted + ".")
        elif a != b:
            out.append(f"{dotted}: {a!r} -> {b!r}")
    return out


def describe_changes(saved_spec: Mapping | None, experiment: Experiment) -> str:
    """A short list of the hashed keys that changed between a checkpoint's spec and `experiment`."""
    if not isinstance(saved_spec, Mapping):
        return "the checkpoint records no spec"
    changes = [
        c
        for c in _spec_diff(saved_spec, experiment.to_dict())
        if not any(c.startswith(k + ":") or c.startswith(k + ".") for k in HASH_EXCLUDED)
    ]
    if not changes:
        return f"the init_from experiment '{experiment.init_from}' changed"
    more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
    return "changed: " + "; ".join(changes[:3]) + more


def load_resume_state(run_dir: Path, experiment: Experiment) -> dict[str, Any]:
    """Read `run_dir/last.pt` for --resume: the checkpoint dict, checked against `experiment`'s config hash."""
    if not run_dir.is_dir():
        raise UserError(f"--resume: run directory {run_dir} does not exist; start the run without --resume")
    path = run_dir / LAST
    if not path.is_file():
        raise UserError(
            f"--resume: {path} does not exist (the run stopped before its first checkpoint); "
            "start it again without --resume"
        )
    ckpt = read_checkpoint(path)
    state = ckpt.get("train_state")
    if not isinstance(state, Mapping) or "step" not in state:
        raise UserError(f"--resume: {path} holds no training state; it is not a checkpoint written by `moeisr train`")
    if state.get("config_hash") != experiment.config_hash:
        raise UserError(
            f"--resume: {path} was trained with config hash {state.get('config_hash')}, but {experiment.path} "
            f"(profile {experiment.profile}) now gives {experiment.config_hash} "
            f"({describe_changes(state.get('spec'), experiment)}); restore the spec or start a new run with "
            "another --out"
        )
    return ckpt


# ------------------------------------------------------------------------------------ init_from


def default_parent_checkpoint(run_dir: Path, parent_name: str) -> Path:
    """Where `init_from: parent_name` is looked for by default: the sibling run's final.pt."""
    return run_dir.parent / parent_name / FINAL


def resolve_parent_checkpoint(experiment: Experiment, run_dir: Path, init: str | Path | None = None) -> Path | None:
    """The checkpoint an `init_from` experiment starts from (None without init_from).

    `init` (the --init flag) is used as given. Otherwise `RUN_DIR/../<init_from>/final.pt` must exist and
    have been trained with the parent spec's config hash under the same profile; each problem is a UserError
    saying which command produces the missing checkpoint.
    """
    if experiment.init_from is None:
        if init is not None:
            raise UserError(f"--init {init}: {experiment.path} has no init_from, so there is nothing to initialise")
        return None
    parent = experiment.parent
    if init is not None:
        path = Path(init)
        if not path.is_file():
            raise UserError(f"--init {path}: no such checkpoint file")
        return path
    path = default_parent_checkpoint(run_dir, experiment.init_from)
    command = (
        f"moeisr train {parent.path if parent is not None else experiment.init_from} --profile {experiment.profile} "
        f"--out {path.parent}"
    )
    if not path.is_file():
        raise UserError(
            f"{experiment.name} starts from {experiment.init_from}'s final checkpoint, but {path} does not exist; "
            f"train it first with `{command}` (or pass --init CKPT)"
        )
    ckpt = read_checkpoint(path)
    found = (ckpt.get("meta") or {}).get("config_hash")
    if parent is not None and found != parent.config_hash:
        raise UserError(
            f"{path} was trained with config hash {found}, but {parent.path} (profile {experiment.profile}) gives "
            f"{parent.config_hash}; retrain it with `{command}`, or pass --init {path} to use it anyway"
        )
    return path


# -------------------------------------------------------------------------------------- provenance
