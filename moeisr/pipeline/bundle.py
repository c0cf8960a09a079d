"""Bundled checkpoints: small weights-only copies of each experiment's final weights, reused by config hash.

A bundle `<results>/checkpoints/<experiment>.pt` is written with `save_checkpoint` (our format, no optimizer or
RNG state) and its `meta` records the experiment, profile, config hash, full spec, training commit, steps and
training time. Its bytes depend only on the run's final.pt and the experiment, so re-bundling the same run gives
the same file (and the same `ckpt_hash`, so the evaluation cache stays valid).

`prepare_checkpoint` decides, and says why: reuse the bundle when its recorded config hash equals the
experiment's; otherwise take the finished run in the run folder, resume it from last.pt, or train it from
scratch, and bundle the result.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from moeisr.config import Experiment
from moeisr.errors import UserError
from moeisr.evaluate.cache import ckpt_hash
from moeisr.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from moeisr.train.calibrate import calibrate_cmsr, needs_calibration
from moeisr.train.state import FINAL, LAST, LOG_FILE, describe_changes


@dataclass
class CheckpointInfo:
    """The checkpoint an experiment is evaluated with and how it was obtained in this run.

    status: "reused" (bundle matched), "finished-run" (bundled from a finished run), "resumed" or "trained".
    """

    experiment: Experiment
    path: Path
    status: str
    reason: str
    seconds: float = 0.0  # wall time spent on it in this run
    meta: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Plain values for timings.json and REPORT.md."""
        return {
            "status": self.status,
            "reason": self.reason,
            "seconds_now": round(self.seconds, 3),
            "config_hash": self.experiment.config_hash,
            "init_from": self.experiment.init_from,
            "steps": self.meta.get("steps"),
            "train_seconds": self.meta.get("train_seconds"),
            "train_commit": self.meta.get("commit"),
            "ckpt_hash": ckpt_hash(self.path),
            "size_mb": self.path.stat().st_size / 1e6,
        }


def shown(path: Path) -> str:
    """`path` relative to the working directory when it is inside it (shorter logs, no local prefixes in reports)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def bundle_status(bundle: Path, experiment: Experiment) -> tuple[bool, str]:
    """(whether `bundle` can be reused for `experiment`, why): its recorded config hash must equal the experiment's."""
    if not bundle.is_file():
        return False, f"no bundled checkpoint at {shown(bundle)}"
    try:
        meta = read_checkpoint(bundle).get("meta") or {}
    except UserError as exc:
        return False, f"the bundled checkpoint is unreadable ({exc})"
    found = meta.get("config_hash")
    if found == experiment.config_hash:
        return True, f"its config hash {found} matches"
    changes = describe_changes(meta.get("spec"), experiment)
    return (
        False,
        f"{shown(bundle)} has config hash {found}, the experiment now gives {experiment.config_hash} ({changes})",
    )


def _spec_path(experiment: Experiment) -> str:
    """The experiment file as `experiments/...` (portable across clones), else as given."""
    path = Path(experiment.path).resolve()
    for parent in path.parents:
        if parent.name == "experiments":
            return path.relative_to(parent.parent).as_posix()
    return str(experiment.path)


def write_bundle(final: Path, bundle: Path, experiment: Experiment) -> dict:
    """Save the weights of the run checkpoint `final` to `bundle` (weights only); returns the bundle's meta."""
    ckpt = read_checkpoint(final)
    state = ckpt.get("train_state") or {}
    source = ckpt.get("meta") or {}
    model = load_model(final)
    meta = {
        "experiment": experiment.name,
        "profile": experiment.profile,
        "config_hash": experiment.config_hash,
        "spec_path": _spec_path(experiment),
        "spec": experiment.to_dict(),
        "init_from": experiment.init_from,
        "run_id": f"{experiment.profile}/{experiment.name}",
        "commit": source.get("commit"),
        "steps": int(state.get("step", source.get("step", 0))),
        "train_seconds": float(state.get("elapsed", 0.0)),
        "final": True,
        "stopped_early": source.get("stopped_early"),  # the convergence stop's reason, if it ended the run
        "val_history": state.get("val_history") or [],  # (step, held-out PSNR) of the run's validations
    }
    spec = {"name": ckpt["model"]["name"], "args": dict(ckpt["model"].get("args") or {})}
    if needs_calibration(model):  # LMF: CMSR's table is measured on training images once, here
        spec["args"]["cmsr_spec"] = calibrate_cmsr(model, experiment)
        meta["calibrated"] = "cmsr_spec.table (moeisr.train.calibrate)"
    save_checkpoint(bundle, model, spec=spec, meta=meta)
    return meta


def _run_state(run_dir: Path) -> tuple[str | None, int | None, Path | None]:
    """(config hash, step, file) of the newest checkpoint in `run_dir` (last.pt, else final.pt), or Nones."""
    for name in (LAST, FINAL):
        path = run_dir / name
        if path.is_file():
            ckpt = read_checkpoint(path)
            state = ckpt.get("train_state") or {}
            meta = ckpt.get("meta") or {}
            return state.get("config_hash", meta.get("config_hash")), state.get("step", meta.get("step")), path
    return None, None, None


def prepare_checkpoint(
    experiment: Experiment,
    *,
    bundle: Path,
    run_dir: Path,
    log_copy: Path,
    parent: Path | None,
    retrain: bool = False,
    allow_training: bool = True,
    device: str = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> CheckpointInfo:
    """The checkpoint to evaluate `experiment` with: a reusable bundle, else the run in `run_dir`, bundled.

    parent: the checkpoint an `init_from` experiment starts from (when it trains from scratch). retrain: ignore the
    bundle (a finished or interrupted run in `run_dir` is still used). allow_training: if False, a missing bundle is
    a UserError instead of a training run. The run's log.csv is copied to `log_copy`, for the learning curves.
    """
    from moeisr.train import train

    started = time.monotonic()
    if retrain:
        why = "--retrain ignores the bundled checkpoint"
    else:
        reusable, why = bundle_status(bundle, experiment)
        if reusable:
            log(f"reusing {shown(bundle)} ({why})")
            meta = read_checkpoint(bundle).get("meta") or {}
            return CheckpointInfo(experiment, bundle, "reused", why, time.monotonic() - started, dict(meta))
    found, step, source = _run_state(run_dir)
    if found is not None and found != experiment.config_hash:
        raise UserError(
            f"{experiment.name}: {why}, and {source} was trained with config hash {found}, not "
            f"{experiment.config_hash}; move {run_dir} away (or pass --runs DIR) to train it again"
        )
    max_steps = experiment.optim.max_steps
    final = run_dir / FINAL
    if final.is_file():
        status = "finished-run"
        log(f"{why}; bundling the finished run {shown(final)}")
    else:
        resume = source is not None
        if not allow_training:
            raise UserError(
                f"{experiment.name}: {why}, and {run_dir} holds no finished run; include the train stage "
                "(--stages train,eval,report) to train it"
            )
        if resume:
            log(f"{why}; resuming {shown(run_dir)} from step {step} of {max_steps}")
        else:
            origin = f", starting from {shown(parent)}" if parent is not None else ""
            log(f"{why}; training {max_steps} steps into {shown(run_dir)}{origin}")
        final = train(
            experiment, run_dir, resume=resume, device=device, progress=progress, init=None if resume else parent
        )
        status = "resumed" if resume else "trained"
    meta = write_bundle(final, bundle, experiment)
    if (run_dir / LOG_FILE).is_file():
        log_copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / LOG_FILE, log_copy)
    log(f"bundled {shown(bundle)} ({bundle.stat().st_size / 1e6:.1f} MB, {meta['steps']} steps)")
    return CheckpointInfo(experiment, bundle, status, why, time.monotonic() - started, meta)


def steps_done(name: str, experiment, paths, profile: str) -> int:
    """How many of `experiment`'s steps are done in the `prepare_named` layout: all of them with a reusable bundle,
    else the step of its run folder's newest checkpoint when that was trained with the same config hash, else 0."""
    if bundle_status(paths.bundle / f"{name}.pt", experiment)[0]:
        return experiment.optim.max_steps
    found, step, _ = _run_state(paths.run_dir(profile, name))
    return int(step or 0) if found == experiment.config_hash else 0


def prepare_named(name: str, experiment, paths, profile: str, *, parent, log, stage: str = "train", **options):
    """`prepare_checkpoint` in the folder layout every pipeline shares: bundle `paths.bundle/<name>.pt`, run folder
    `paths.run_dir(profile, name)`, log copy `paths.logs/<name>.csv`; log lines prefixed `[stage] name:`.
    options: retrain, allow_training, device, progress."""
    return prepare_checkpoint(
        experiment,
        bundle=paths.bundle / f"{name}.pt",
        run_dir=paths.run_dir(profile, name),
        log_copy=paths.logs / f"{name}.csv",
        parent=parent,
        log=lambda line: log(f"[{stage}] {name}: {line}"),
        **options,
    )
