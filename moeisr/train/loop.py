"""The training driver: `train(experiment, run_dir, ...)`, resumable bit for bit.

One step: the batch of the step (`sampler.StepBatchSampler`: a function of (seed, step) only), the
learning rate of the step (`schedules.lr_at`), forward, loss, backward, optional gradient clipping,
Adam. Randomness inside a step comes from generators seeded by (seed, step, rank), never from the
global RNG, so a run resumed from any checkpoint repeats the uninterrupted run exactly (on CPU with
`train.deterministic`; the global RNG states are checkpointed too, for anything else that draws on them).

Loss: `loss.l1 · L1(pred, gt)` on [0, 1] pixel values, plus for MoEISR the routing module's
`aux_loss` = loss.balance_weight · balance (+ cost_weight · cost). **Routing training settings live in
the `loss:` section**: `loss.tau` (Gumbel-Softmax temperature), `loss.balance_weight`, and in
`loss.args` the balance form (`balance: switch|cv2|none`) and `cost_weight`. `build_model` writes them
into the MoEISR model's `routing` args, so a checkpoint's model spec records what it was trained with;
setting them under `model.args.routing` as well is an error (one place only).

See `moeisr.train.state` for the run directory layout and what a checkpoint holds.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn
from tqdm import tqdm

from moeisr.config import Experiment
from moeisr.data.train import ImplicitDownsampled, TrainImages
from moeisr.errors import UserError
from moeisr.io import FileLock, atomic_write_text
from moeisr.models.checkpoint import load_model, save_checkpoint
from moeisr.models.moe.expert_init import init_experts_from_prefix
from moeisr.models.moe.moeisr import init_from_backbone
from moeisr.models.moe.routing import balance_loss
from moeisr.models.prefix_init import decoder_inputs, init_shallower_from_parent, shallower_depth
from moeisr.provenance import current_commit
from moeisr.registry import models
from moeisr.train import distributed as D
from moeisr.train.logs import MetricsLog
from moeisr.train.sampler import EpochIndexed, StepBatchSampler, derived_seed, seed_worker
from moeisr.train.schedules import LRSchedule, param_groups
from moeisr.train.state import (
    FINAL,
    LAST,
    LOCK_NAME,
    SPEC_FILE,
    check_fresh_run_dir,
    load_resume_state,
    remove_stale_temp_files,
    resolve_parent_checkpoint,
    rng_state,
    seed_everything,
    set_rng_state,
)
from moeisr.train.validation import Validator

LOSS_ARGS = ("balance", "cost_weight", "cost_target", "noise_anneal_steps", "expert_loss_weight")  # MoEISR only
ROUTING_LOSS_KEYS = ("tau", "balance_weight", *LOSS_ARGS)  # owned by the loss: section


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after saving `checkpoint` at `step`; resume with --resume."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; state saved to {checkpoint}")
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


# ------------------------------------------------------------------------------------------ model


def is_routed(model_name: str) -> bool:
    """Whether the registered model `model_name` trains with a routing loss (`has_routing_loss`, MoEISR)."""
    try:
        return bool(getattr(models.get(model_name), "has_routing_loss", False))
    except KeyError:
        return False


def training_model_spec(experiment: Experiment) -> dict[str, Any]:
    """The `{name, args}` spec to build: `experiment.model`, with the loss section's routing settings for MoEISR."""
    spec = {"name": experiment.model.name, "args": copy.deepcopy(dict(experiment.model.args))}
    loss, where = experiment.loss, experiment.path or experiment.name
    if not is_routed(spec["name"]):
        if loss.balance_weight or loss.args:
            raise UserError(
                f"{where}: loss.balance_weight and loss.args apply to MoEISR only; model {spec['name']!r} "
                "trains with the L1 loss alone"
            )
        return spec
    routing = dict(spec["args"].get("routing") or {})
    clash = sorted(set(routing) & set(ROUTING_LOSS_KEYS))
    if clash:
        target = f"loss.{clash[0]}" if clash[0] in ("tau", "balance_weight") else f"loss.args.{clash[0]}"
        raise UserError(f"{where}: model.args.routing.{clash[0]} is a training setting; set {target} instead")
    unknown = sorted(set(loss.args) - set(LOSS_ARGS))
    if unknown:
        raise UserError(f"{where}: unknown loss.args key {unknown[0]!r} (MoEISR knows {', '.join(LOSS_ARGS)})")
    routing.update(tau=loss.tau, balance_weight=loss.balance_weight, **loss.args)
    spec["args"]["routing"] = routing
    return spec


def build_model(experiment: Experiment) -> nn.Module:
    """A freshly initialised model of `experiment` (global torch RNG), on the CPU, in training mode."""
    spec = training_model_spec(experiment)
    try:
        return models.make(spec).train()
    except KeyError as exc:
        raise UserError(f"{experiment.path}: {exc.args[0] if exc.args else exc}") from None
    except (TypeError, ValueError) as exc:
        raise UserError(f"{experiment.path}: cannot build model {spec['name']!r} ({exc})") from None


def _spec_mismatch(a: dict, b: dict) -> str | None:
    if a == b:
        return None
    return (
        f"{yaml.safe_dump(a, default_flow_style=True, width=10**6).strip()} vs "
        + yaml.safe_dump(b, default_flow_style=True, width=10**6).strip()
    )


def converged(history: list[tuple[int, float]], step: int, window: int, min_gain_db: float) -> str | None:
    """The convergence verdict at `step`: a reason string when the best validation PSNR up to `step` gained
    less than `min_gain_db` per 1000 steps over the best up to `step - window`, else None.

    history: (step, PSNR dB) pairs, including one at or before `step - window` (the starting weights).
    """
    before = [v for s, v in history if s <= step - window]
    now = [v for s, v in history if s <= step]
    if not before or not now:
        return None
    gain = max(now) - max(before)
    per_1000 = gain * 1000 / window
    if per_1000 < min_gain_db:
        return f"best validation {max(now):.3f} dB gained {per_1000:+.3f} dB per 1000 steps (< {min_gain_db:g})"
    return None


def initialise_from_parent(model: nn.Module, checkpoint: Path, experiment: Experiment | None = None) -> None:
    """Start `model` from a trained checkpoint: MoEISR via `init_from_backbone`; a dense model whose decoder MLP is
    shallower than the parent's (`init.experts` prefix or prefix_lstsq, e.g. liif_d1 from LIIF) via
    `init_shallower_from_parent`; a model of another kind than the parent's (e.g. LM-LIIF from LIIF) by copying the
    parent's encoder only (`copy_encoder`); others by loading all of the parent's weights.

    The checkpoint's model spec must equal the backbone spec (MoEISR) or the model spec, else UserError; for an
    encoder-only copy the encoder specs must be equal; for a shallower decoder everything but the MLP's depth.
    """
    parent = load_model(checkpoint)
    target = model.backbone if model.has_routing_loss else model
    method = experiment.spec.init.experts if experiment is not None else "random"
    if target is model and method != "random" and parent.spec != model.spec:
        shallower_depth(model, parent, source=str(checkpoint))  # refuse a mismatch before fitting anything
        inputs = decoder_inputs(parent.eval(), fit_batches(experiment)) if method == "prefix_lstsq" else None
        init_shallower_from_parent(model, parent, method, inputs, source=str(checkpoint))
        return
    if target is model and _model_kind(parent.spec["name"]) is not _model_kind(model.spec["name"]):
        copy_encoder(model, parent, source=str(checkpoint))
        return
    mismatch = _spec_mismatch(parent.spec, target.spec)
    if mismatch:
        what = "backbone" if target is not model else "model"
        hint = "train the parent with the same profile"
        if target is model and _is_shallower(model, parent):
            hint = "a shallower decoder starts from the parent's first layers with init.experts prefix or prefix_lstsq"
        raise UserError(f"{checkpoint}: its model does not match this experiment's {what} ({mismatch[:600]}); {hint}")
    if target is model:
        model.load_state_dict(parent.state_dict(), strict=True)
    else:
        init_from_backbone(model, parent)
        method = experiment.spec.init.experts if experiment is not None else "random"
        if method != "random":
            inputs = None
            if method == "prefix_lstsq":
                inputs = decoder_inputs(parent.eval(), fit_batches(experiment))
            init_experts_from_prefix(model, parent, method, inputs)


def fit_batches(experiment: Experiment, batch_size: int = 8):
    """`experiment.init.fit_patches` training patches (its training data, seeded by the run's seed, no HR used by
    the fit) as (inp, coord, cell) batches."""
    n = experiment.spec.init.fit_patches
    data = training_patches(experiment, derived_seed("expert-init", experiment.train.seed), augment=False)
    for start in range(0, n, batch_size):
        items = [data[i % len(data)] for i in range(start, min(start + batch_size, n))]
        yield tuple(torch.stack([item[k] for item in items]) for k in ("inp", "coord", "cell"))


def _is_shallower(model: nn.Module, parent: nn.Module) -> bool:
    try:
        shallower_depth(model, parent)
    except UserError:
        return False
    return True


def _model_kind(name: str):
    """The constructor behind a registered model name (aliases such as `lmliif` / `lm-liif` coincide)."""
    try:
        return models.get(name)
    except KeyError:
        return name


def copy_encoder(model: nn.Module, parent: nn.Module, source: str = "parent") -> None:
    """Copy `parent.encoder`'s weights into `model.encoder`, in place; the rest of `model` keeps its initialisation.

    For a model that starts from a trained model of another kind (LM-LIIF from LIIF, LM-LTE from LTE): only the
    encoder is shared. Both must have an `encoder` with the same spec, else UserError.
    """
    src, dst = getattr(parent, "encoder", None), getattr(model, "encoder", None)
    if not isinstance(src, nn.Module) or not isinstance(dst, nn.Module):
        raise UserError(
            f"{source}: its model ({parent.spec['name']!r}) differs from this experiment's ({model.spec['name']!r}), "
            "and only an encoder can be copied between different models; one of them has none"
        )
    mismatch = _spec_mismatch(getattr(src, "spec", None), getattr(dst, "spec", None))
    if mismatch:
        raise UserError(
            f"{source}: its encoder does not match this experiment's encoder ({mismatch[:600]}); "
            "use the same encoder_spec (and profile) as the parent"
        )
    dst.load_state_dict(src.state_dict(), strict=True)


class TrainingObjective(nn.Module):
    """The loss of one batch, as a module so that DistributedDataParallel can wrap it.

    forward(inp B×3×h×w, coord B×Q×2, cell B×Q×2, gt B×Q×3, generator) → (loss, l1, balance); l1 and
    balance are detached, balance is NaN for models without routing.
    """

    def __init__(self, model: nn.Module, l1_weight: float):
        super().__init__()
        self.model = model
        self.l1_weight = l1_weight
        self.routed = model.has_routing_loss

    def forward(self, inp, coord, cell, gt, generator: torch.Generator | None = None):
        if self.routed:
            pred, info = self.model.forward_train(inp, coord, cell, generator=generator)
            aux = self.model.aux_loss(info)
            if info.expert_preds is not None:  # every expert supervised on every query (loss.args.expert_loss_weight)
                aux = aux + self.model.router.expert_loss_weight * (info.expert_preds - gt[None]).abs().mean()
            balance = balance_loss(info, self.model.router.balance).detach()
        else:
            pred = self.model(inp, coord, cell)
            aux, balance = 0.0, torch.full((), math.nan, device=pred.device)
        l1 = F.l1_loss(pred, gt)
        return self.l1_weight * l1 + aux, l1.detach(), balance


# ------------------------------------------------------------------------------------------- data


def training_patches(experiment: Experiment, seed: int, augment: bool) -> ImplicitDownsampled:
    """The experiment's training patches (`data` section: sets, LR patch size, scale range, queries per patch)."""
    d = experiment.data
    images = TrainImages(d.train_sets)
    return ImplicitDownsampled(
        images, d.inp_size, d.scale_min, d.scale_max, augment=augment, sample_q=d.sample_q, seed=seed
    )


def build_loader(experiment: Experiment, ctx: D.DistContext, start_step: int):
    """(DataLoader, StepBatchSampler) reading this rank's batches of steps start_step..max_steps-1."""
    d, seed = experiment.data, experiment.train.seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if not ctx.is_main else "default")  # per-file size warnings, once
        dataset = training_patches(experiment, seed, augment=d.augment)
    sampler = StepBatchSampler(
        len(dataset), d.batch_size, seed, start_step, experiment.optim.max_steps, ctx.rank, ctx.world_size
    )
    loader = torch.utils.data.DataLoader(
        EpochIndexed(dataset),
        batch_sampler=sampler,
        num_workers=d.num_workers,
        worker_init_fn=functools.partial(seed_worker, seed=derived_seed("workers", seed, ctx.rank)),
        generator=torch.Generator().manual_seed(seed),  # never touch the global RNG
        pin_memory=ctx.device.type == "cuda",
    )
    return loader, sampler


# --------------------------------------------------------------------------------------- plumbing


class _StopSignal:
    """Sets `signum` on SIGINT/SIGTERM (handled at the next step boundary); a second SIGINT aborts at once."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _determinism(enabled: bool, device: torch.device):
    """torch.use_deterministic_algorithms and cuDNN flags for the run, restored afterwards."""
    cudnn = torch.backends.cudnn
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    if enabled:
        if device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        torch.use_deterministic_algorithms(True)
        cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        cudnn.deterministic, cudnn.benchmark = previous[2], previous[3]


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ------------------------------------------------------------------------------------------- train


def train(
    experiment: Experiment,
    run_dir: str | Path,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    init: str | Path | None = None,
) -> Path:
    """Train `experiment` into `run_dir`; returns the path of `run_dir/final.pt`.

    resume: continue from `run_dir/last.pt` (its config hash must equal `experiment.config_hash`);
    without it `run_dir` must not exist or be empty. device: "cpu", "cuda" or "cuda:N" (under torchrun
    with CUDA each process takes cuda:LOCAL_RANK). init: the checkpoint an `init_from` experiment starts
    from (default `run_dir/../<init_from>/final.pt`). Raises UserError for user-fixable problems and
    TrainingInterrupted (after saving last.pt) on SIGINT/SIGTERM.
    """
    run_dir = Path(run_dir)
    ctx = D.setup(device)
    try:
        with _determinism(experiment.train.deterministic, ctx.device), _StopSignal() as stop:
            return _Run(experiment, run_dir, ctx, progress).execute(resume, init, stop)
    finally:
        D.teardown(ctx)


class _Run:
    """One invocation of `train` (fresh or resumed) on one rank."""

    def __init__(self, experiment: Experiment, run_dir: Path, ctx: D.DistContext, progress: bool):
        self.experiment, self.run_dir, self.ctx, self.progress = experiment, run_dir, ctx, progress
        self.parent_checkpoint: Path | None = None
        self.val_history: list[tuple[int, float]] = []  # (step, validation PSNR), for the convergence stop
        self.stopped_early: str | None = None
        self.elapsed_before = 0.0
        self.started = time.monotonic()
        self.commit = current_commit()

    # ---- setup ----------------------------------------------------------------------------------

    def _claim_run_dir(self, resume: bool) -> FileLock | None:
        """Rank 0: check the run directory, create it and lock it against a second trainer."""
        lock = None
        if self.ctx.is_main:
            if not resume:
                check_fresh_run_dir(self.run_dir)
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create run directory {self.run_dir} ({exc.strerror})") from None
            lock = FileLock(self.run_dir / LOCK_NAME, timeout=0)
            lock.acquire()
            remove_stale_temp_files(self.run_dir)
        D.barrier(self.ctx)
        return lock

    def execute(self, resume: bool, init, stop: _StopSignal) -> Path:
        exp = self.experiment
        if resume:
            ckpt = load_resume_state(self.run_dir, exp)
        else:
            ckpt = None
            self.parent_checkpoint = resolve_parent_checkpoint(exp, self.run_dir, init)
        lock = self._claim_run_dir(resume)
        try:
            return self._train(ckpt, stop)
        finally:
            if lock is not None:
                lock.release()

    def _train(self, ckpt: dict | None, stop: _StopSignal) -> Path:
        exp, ctx = self.experiment, self.ctx
        seed_everything(exp.train.seed)
        model = build_model(exp)
        state = ckpt["train_state"] if ckpt is not None else None
        if state is not None:
            try:
                model.load_state_dict(ckpt["model"]["sd"], strict=True)
            except RuntimeError as exc:
                raise UserError(f"{self.run_dir / LAST}: weights do not match the experiment's model ({exc})") from None
            parent = state.get("parent_checkpoint")
            self.parent_checkpoint = Path(parent) if parent else None
            self.elapsed_before = float(state.get("elapsed", 0.0))
            self.val_history = [tuple(x) for x in state.get("val_history", [])]
        elif self.parent_checkpoint is not None:
            initialise_from_parent(model, self.parent_checkpoint, exp)
        self.model = model.to(ctx.device)

        start = int(state["step"]) if state is not None else 0
        loader, self.sampler = build_loader(exp, ctx, start)
        o = exp.optim
        groups = param_groups(model, o)
        self.optimizer = torch.optim.Adam(groups, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
        self.schedule = LRSchedule(self.optimizer, o)
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            self._check_data_state(state.get("data") or {})

        objective = TrainingObjective(model, exp.loss.l1)
        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            objective = nn.parallel.DistributedDataParallel(objective, device_ids=ids)
        validator = None
        if ctx.is_main and exp.data.val_set is not None:
            d = exp.data
            validator = Validator(d.val_set, d.validation_scales(), d.val_limit, crop=d.val_crop)
        log = MetricsLog(self.run_dir, resume_step=start if state is not None else None) if ctx.is_main else None
        try:
            if state is None and ctx.is_main:
                self.save(self.run_dir / LAST, 0)
            if ctx.is_main and not (self.run_dir / SPEC_FILE).is_file():  # also after a kill right at the start
                self._write_spec_file()
            return self._loop(objective, loader, start, validator, log, stop)
        finally:
            if log is not None:
                log.close()

    def _check_data_state(self, saved: dict) -> None:
        now = self.sampler.state(0)
        for key in ("dataset_size", "global_batch"):
            if key in saved and saved[key] != now[key] and self.ctx.is_main:
                warnings.warn(
                    f"{self.run_dir / LAST}: the training data changed since the checkpoint ({key} {saved[key]} -> "
                    f"{now[key]}); the resumed data order differs from the uninterrupted run's",
                    UserWarning,
                    stacklevel=2,
                )

    def _write_spec_file(self) -> None:
        exp = self.experiment
        doc = {
            **exp.metadata(),
            "parent_checkpoint": str(self.parent_checkpoint) if self.parent_checkpoint else None,
            "spec": exp.to_dict(),
        }
        atomic_write_text(self.run_dir / SPEC_FILE, yaml.safe_dump(doc, sort_keys=False))

    # ---- the loop -------------------------------------------------------------------------------

    def _loop(self, objective, loader, start: int, validator, log: MetricsLog | None, stop: _StopSignal) -> Path:
        exp, ctx = self.experiment, self.ctx
        max_steps, t = exp.optim.max_steps, exp.train
        clip = exp.optim.grad_clip
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        totals = torch.zeros(3, dtype=torch.float64)
        count = 0
        bar = tqdm(
            total=max_steps,
            initial=start,
            desc=f"train {exp.name}",
            unit="step",
            disable=not (self.progress and ctx.is_main),
            smoothing=0.05,
            dynamic_ncols=True,
        )
        step = start
        stop_rule = t.stop_gain_db is not None and validator is not None
        if stop_rule and not self.val_history:  # the starting weights: the first check's reference
            self.val_history.append((start, validator(self.model, ctx.device)))
            if log is not None:
                log.write(start, val_psnr=self.val_history[-1][1], seconds=self.elapsed())
        with bar:
            for batch in loader:
                batch = _to(batch, ctx.device)
                lr = self.schedule.apply(step)
                generator = None
                if self.model.has_routing_loss:
                    self.model.router.set_step(step)
                    generator = torch.Generator(device=ctx.device)
                    generator.manual_seed(derived_seed("gumbel", exp.train.seed, step, ctx.rank))
                loss, l1, balance = objective(batch["inp"], batch["coord"], batch["cell"], batch["gt"], generator)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                self.optimizer.step()
                step += 1
                totals += torch.stack([loss.detach(), l1, balance]).to("cpu", torch.float64)
                count += 1
                bar.update(1)

                row = {}
                if step % t.log_every == 0 or step == max_steps:
                    means = D.mean_over_ranks(ctx, (totals / count).tolist())
                    if not math.isfinite(means[0]):
                        raise UserError(
                            f"the loss became {means[0]} by step {step}; lower optim.lr or set optim.grad_clip "
                            f"(the last good state is {self.run_dir / LAST})"
                        )
                    row.update(loss=means[0], l1=means[1], balance=means[2], lr=lr)
                    totals.zero_()
                    count = 0
                check = stop_rule and (step - exp.optim.warmup_steps) % t.stop_check_every == 0
                if validator is not None and (step % t.val_every == 0 or step == max_steps or check):
                    row["val_psnr"] = validator(self.model, ctx.device)
                    if self.model.has_routing_loss:
                        row["pick_agree"] = validator.pick_agreement(self.model, ctx.device)
                    self.val_history.append((step, row["val_psnr"]))
                    if check and step > exp.optim.warmup_steps:
                        self.stopped_early = converged(self.val_history, step, t.stop_check_every, t.stop_gain_db)
                if row and log is not None:
                    row["seconds"] = self.elapsed()
                    log.write(step, **row)
                    bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "lr", "val_psnr") if k in row})
                stopping = D.any_rank(ctx, stop.signum is not None)
                if stopping or step % t.ckpt_every == 0:
                    if ctx.is_main:
                        self.save(self.run_dir / LAST, step)
                    D.barrier(ctx)
                if stopping:
                    raise TrainingInterrupted(stop.signum or signal.SIGTERM, step, self.run_dir / LAST)
                if self.stopped_early is not None:
                    bar.write(f"train {exp.name}: converged at step {step}: {self.stopped_early}")
                    return self._finish(step)
                if step >= max_steps:
                    break
        if step != max_steps:
            raise RuntimeError(f"the data loader ended at step {step}, before optim.max_steps={max_steps}")
        return self._finish(step)

    def _finish(self, step: int) -> Path:
        ctx = self.ctx
        digests = D.gather_strings(ctx, D.state_digest(self.model)) if ctx.distributed else None
        final = self.run_dir / FINAL
        if ctx.is_main:
            self.save(self.run_dir / LAST, step)
            extra = {"final": True, "replica_digests": digests, "stopped_early": self.stopped_early}
            self.save(final, step, extra_meta=extra)
        D.barrier(ctx)
        if digests is not None and len(set(digests)) > 1:
            raise RuntimeError(f"DDP replicas hold different weights after training: {digests}")
        return final

    # ---- checkpoints ----------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def save(self, path: Path, step: int, extra_meta: dict | None = None) -> Path:
        """Write a full, resumable checkpoint of `step` completed steps to `path` (atomically)."""
        exp = self.experiment
        train_state = {
            "step": step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "rng": rng_state(),
            "data": self.sampler.state(step),
            "config_hash": exp.config_hash,
            "profile": exp.profile,
            "spec": exp.to_dict(),
            "world_size": self.ctx.world_size,
            "elapsed": self.elapsed(),
            "parent_checkpoint": str(self.parent_checkpoint) if self.parent_checkpoint else None,
            "val_history": [list(x) for x in self.val_history],
        }
        meta = {
            **exp.metadata(),
            "commit": self.commit,
            "run_id": self.run_dir.name,
            "step": step,
            "final": False,
            **(extra_meta or {}),
        }
        return save_checkpoint(path, self.model, spec=self.model.spec, train_state=train_state, meta=meta)
