"""`moeisr ablations`, the pipeline part: train or reuse the ablation rows, evaluate them, sweep the routing of the
main MoEISR models, and write the raw tidy artefacts the report reads (`moeisr.report.ablations.render`).

Stages, each optional, always in this order:

- **train**: each selected row (and its reference) through `moeisr.pipeline.bundle.prepare_checkpoint`: its bundle
  `<results>/ablations/checkpoints/<row>.pt` is reused when its config hash matches, else the row fine-tunes into
  `<runs>/<profile>/ablations/<row>` (resuming from last.pt) from the main job's backbone checkpoint
  (`<results>/checkpoints/liif.pt` / `lte.pt`). The main job's checkpoints are reused, never retrained, unless
  `train_main` (the smoke test) asks for it.
- **eval**: the rows on the profile's ablation grid, through the main runner and results cache.
- **heldout** (a suite with a `selection` rule only, e.g. `recipe.yaml`): each row's checkpoint on the held-out split
  it validated on in training (the budget's `data.val_*`: fixed T91 crops, never a benchmark set), through
  `moeisr.train.validation.Validator.measure`: per crop PSNR, GFLOPs, expert shares and decoder cost, into
  `heldout.csv` (reused per row while its checkpoint hash is unchanged). The recipe is chosen on these alone
  (`moeisr.report.ablations.recipe`); the grid's rows are for reporting.
- **sweep**: the main MoEISR checkpoints at `points` routing knobs from all-cheapest to all-deepest plus the argmax
  routing, their backbones, the oracle at each ε and the random router at the shares of every learned knob.
- **report** (this module's part: the raw artefacts, read from the cache, nothing evaluated) into
  `<results>/ablations/`: `rows.csv` (the rows' per-image results with their row metadata), `matched.csv` (each
  reference re-routed to a factor row's decoder cost, `row` naming that row), `sweep.csv` (the sweep's per-image
  results, `family` and `router` columns added) and `meta.json` (each row's metadata incl. its experts' relative
  costs, the grid, the sweep settings, the main models' steps, provenance). The summaries, tables, figures and the
  REPORT.md section are the report's (`moeisr.commands.ablations` runs it after this).

Folders are the main job's (`moeisr.pipeline.reproduce.default_paths`): results `results/` (cpu) or
`<runs>/<profile>/results` (smoke), the same evaluation cache, so rows the main job computed (the backbones, the
argmax routing of the main models) are reused. A suite file other than the default `ablations.yaml` writes into
`<results>/ablations/<suite stem>/` and trains in `<runs>/<profile>/ablations/<suite stem>/<row>`, so suites never mix.
Everything is resumable: checkpoints by config hash and last.pt, evaluation rows by the cache, one image at a time.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from moeisr.artefacts import ABLATION_HELDOUT_CSV, ABLATION_META_FILE, ABLATION_RAW_CSVS, TIMINGS_FILE
from moeisr.config import Experiment
from moeisr.data.benchmark import list_images
from moeisr.data.degrade import degrade, floor_lr_size
from moeisr.data.images import image_size, load_image
from moeisr.errors import UserError
from moeisr.evaluate.cache import ResultsCache, knob_label
from moeisr.evaluate.reference_routers import evaluate_reference_routers, reference_labels
from moeisr.evaluate.routers import default_routing_cost, knob_at_cost, sweep_knobs
from moeisr.evaluate.runner import Grid, ModelEntry, checkpoint_entry, evaluate, grid_keys
from moeisr.flops.per_image import ArchitectureFlops
from moeisr.io import FileLock, atomic_write_text
from moeisr.pipeline.ablation_spec import (
    SUITE_FILE,
    ProfileSpec,
    Row,
    Suite,
    check_dense,
    check_heldout,
    check_row,
    factor_value,
    hint,
    load_suite,
    row_experiment,
)
from moeisr.pipeline.bundle import CheckpointInfo, prepare_named, steps_done
from moeisr.pipeline.reproduce import ROLES, Paths, default_paths, load_experiments, set_sizes, with_ancestors
from moeisr.pipeline.timings import load_timings, record_stage, save_timings
from moeisr.provenance import current_commit

STAGES = ("train", "eval", "heldout", "sweep", "report")  # heldout: suites with a selection rule only
MODEL_NAMES = {role.experiment: role.model for role in ROLES}  # moeisr_liif -> moeisr-liif (the `model` column)

# Planning constants for `estimate`, measured on the 2-core development machine (docs/ablations.md, "Budget").
STEP_SECONDS = {"liif": 1.7, "lte": 1.2}  # one MoEISR fine-tune step over that backbone family, cpu profile
DECODE_MP_PER_S = 0.07  # output megapixels per second of a full (deepest-expert) decode
COUNT_MP_PER_S = 0.07  # an fvcore count at all-cheapest costs about one decode
METRICS_S_PER_MP = 1.5  # PSNR + SSIM + LPIPS(alex) per output megapixel (measured 1.2 on one busy core)
MEAN_SWEEP_COST = 0.7  # mean relative decoder cost over the sweep's knobs (cheapest ~0.4, deepest 1)
# A factor row whose default routing's decoder cost differs from its reference's by more than this (in units of the
# deepest expert's cost) is also compared with the reference re-routed to the row's cost (`matched_knob`), so a
# factor that only moved the operating point along the reference's cost/quality curve is told apart from one that
# moved the curve.
MATCH_MIN_COST = 0.02


@dataclass(frozen=True)
class AblationPaths:
    """The main job's folders plus where the ablations write: `<results>/ablations/`, or for a suite other than the
    default one (`suite` = its file's stem) `<results>/ablations/<suite>/`."""

    main: Paths
    suite: str | None = None

    @property
    def root(self) -> Path:
        return self.main.results / "ablations" / (self.suite or "")

    @property
    def bundle(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def timings(self) -> Path:
        return self.root / TIMINGS_FILE

    @property
    def meta(self) -> Path:
        return self.root / ABLATION_META_FILE

    def csv(self, name: str) -> Path:
        return self.root / f"{name}.csv"

    @property
    def heldout(self) -> Path:
        return self.csv(ABLATION_HELDOUT_CSV)

    def run_dir(self, profile: str, row: str) -> Path:
        return self.main.runs / profile / "ablations" / (self.suite or "") / row


@dataclass
class AblationResult:
    """What `run_ablations` did."""

    paths: AblationPaths
    rows: list[Row] = field(default_factory=list)
    experiments: dict[str, Experiment] = field(default_factory=dict)
    checkpoints: dict[str, CheckpointInfo] = field(default_factory=dict)
    main_checkpoints: dict[str, CheckpointInfo] = field(default_factory=dict)
    knobs: dict[str, list[float | None]] = field(default_factory=dict)
    matched: dict[str, float] = field(default_factory=dict)  # row → its reference's knob at the row's decoder cost
    rows_computed: int = 0
    sweep_computed: int = 0
    heldout_computed: list[str] = field(default_factory=list)  # rows measured on the held-out split now
    heldout_split: dict | None = None  # {set, scales, crop, limit} for a suite with a selection rule
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # the raw artefacts: rows, matched, sweep
    meta: dict = field(default_factory=dict)  # meta.json
    written: list[Path] = field(default_factory=list)
    estimate: dict[str, float] = field(default_factory=dict)


def grid_of(profile: ProfileSpec) -> Grid:
    limits = {s: profile.limit_for(s) for s in profile.sets if profile.limit_for(s) is not None}
    return Grid(sets=list(profile.sets), scales=list(profile.scales), knobs=[None], limit=limits)


def grid_megapixels(grid: Grid) -> float:
    """Output megapixels of one model over the grid (every scale decodes about the HR image)."""
    total = 0
    for dataset in grid.sets:
        for path in list_images(dataset, limit=grid.limit.get(dataset)):
            h, w = image_size(path)
            for scale in grid.scales:
                h_lr, w_lr = floor_lr_size((h, w), scale)
                total += round(h_lr * scale) * round(w_lr * scale)
    return total / 1e6


def heldout_megapixels(split: dict) -> float:
    """Output megapixels of one pass over the held-out split (`check_heldout`): every image's crop (or the image)
    at every scale."""
    total = 0
    for path in list_images(split["set"], limit=split["limit"]):
        h, w = (split["crop"], split["crop"]) if split["crop"] else image_size(path)
        for scale in split["scales"]:
            h_lr, w_lr = floor_lr_size((h, w), scale)
            total += round(h_lr * scale) * round(w_lr * scale)
    return total / 1e6


def all_experts_cost(experiment: Experiment) -> float:
    """Σ_j c_j / c_max of a MoEISR experiment's experts: the decode cost of running every expert (the sweep's
    `expert_outputs`), in units of one all-deepest decode."""
    from moeisr.train.loop import build_model

    costs = build_model(experiment).experts.relative_costs()
    return float(costs.sum() / costs.max())


def estimate(
    rows: Sequence[Row],
    experiments: dict[str, Experiment],
    profile: ProfileSpec,
    grid: Grid,
    sweep_experiments: dict[str, Experiment],
    heldout: dict | None = None,
) -> dict[str, float]:
    """Expected seconds of each stage from scratch on the 2-core CPU (the planning constants above);
    `sweep_experiments`: the main MoEISR experiments the routing sweep decodes, by name. With a held-out split
    (`check_heldout`), its passes are added under `heldout` (and in `total`): one at the end of training and one in
    the heldout stage per row, each a full-cost decode (PSNR only, no other metric), and an fvcore count per
    architecture."""
    mp = grid_megapixels(grid)
    train = sum(experiments[r.name].optim.max_steps * STEP_SECONDS.get(experiments[r.name].family, 1.7) for r in rows)
    architectures = len({json.dumps(_architecture(experiments[r.name]), sort_keys=True) for r in rows})
    eval_rows = len(rows) * mp * (1 / DECODE_MP_PER_S + METRICS_S_PER_MP) + architectures * mp / COUNT_MP_PER_S
    # at most one re-routed reference per factor row (`_matched_knobs`), at about a sweep knob's cost
    eval_rows += sum(1 for r in rows if r.factor) * mp * (MEAN_SWEEP_COST / DECODE_MP_PER_S + METRICS_S_PER_MP)
    knobs = profile.sweep.points + 1
    references = len(profile.sweep.oracle_levels) + (profile.sweep.points - 1) * len(profile.sweep.random_seeds)
    sweep = sum(
        mp * (
            knobs * (MEAN_SWEEP_COST / DECODE_MP_PER_S + METRICS_S_PER_MP)
            + all_experts_cost(sweep_experiments[name]) / DECODE_MP_PER_S
            + references * METRICS_S_PER_MP
        )
        for name in profile.sweep.models
    )  # fmt: skip
    out = {"train": train, "eval": eval_rows, "sweep": sweep, "total": train + eval_rows + sweep}
    if heldout is not None:
        held_mp = heldout_megapixels(heldout)
        out["heldout"] = len(rows) * 2 * held_mp / DECODE_MP_PER_S + architectures * held_mp / COUNT_MP_PER_S
        out["total"] += out["heldout"]
    return out


def _training_left(rows: Sequence[Row], experiments: dict[str, Experiment], paths: AblationPaths, profile: str) -> str:
    """One line: the rows and steps not trained yet (bundles and resumable runs count as done), and their time at
    the planning constants."""
    steps = {r.name: experiments[r.name].optim.max_steps for r in rows}
    todo = {r.name: steps[r.name] - steps_done(r.name, experiments[r.name], paths, profile) for r in rows}
    left = sum(todo.values())
    if not left:
        return f"training left: none ({len(rows)} rows trained)"
    seconds = sum(n * STEP_SECONDS.get(experiments[name].family, 1.7) for name, n in todo.items())
    unfinished = sum(1 for n in todo.values() if n)
    return (
        f"training left: {unfinished} of {len(rows)} rows, {left} of {sum(steps.values())} steps, about "
        f"{_hours(seconds)} at the planning constants (2 threads, a quiet machine)"
    )


def _architecture(experiment: Experiment) -> dict:
    args = {k: v for k, v in experiment.model.args.items() if k != "routing"}
    return {"name": experiment.model.name, "args": args}


def _split_text(split: dict) -> str:
    """'T91, fixed 72 px crops at x2, x4' (+ ', first N images' with a limit)."""
    what = f"fixed {split['crop']} px crops" if split["crop"] else "whole images"
    limit = "" if split["limit"] is None else f", first {split['limit']} images"
    return f"{split['set']}, {what} at {', '.join(f'x{s:g}' for s in split['scales'])}{limit}"


def _suite_folder(suite: Suite, default: Path) -> str | None:
    """None for the default suite file (its outputs stay where they always were), else the file's stem."""
    if suite.path.resolve() == default.resolve():
        return None
    if suite.name in {"checkpoints", "logs"}:
        raise UserError(f"{suite.path}: a suite file may not be named {suite.path.name} (it names a results folder)")
    return suite.name


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


# ------------------------------------------------------------------------------------------ pipeline


def run_ablations(
    profile: str = "cpu",
    *,
    stages: Sequence[str] = STAGES,
    rows: Sequence[str] | None = None,
    results: str | os.PathLike | None = None,
    runs: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    suite: str | os.PathLike | None = None,
    device: str = "cpu",
    overrides: Sequence[str] = (),
    train_main: bool = False,
    retrain: bool = False,
    plan_only: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    command: str | None = None,
) -> AblationResult:
    """Run the stages (module docstring) for `profile`; returns what was done.

    rows: row names of the suite (default: the profile's rows); each brings its reference. overrides: `key=value`
    spec overrides for the main experiments and every row (before the ablation budget and the row's change).
    train_main: train the main job's checkpoints if they are missing (else that is a UserError). retrain: ignore the
    rows' bundles (not the main job's). plan_only: print the rows, the budget and the time estimate, run nothing.
    """
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise UserError(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    main_paths = default_paths(profile, results, runs, cache)
    default_suite = main_paths.experiments / SUITE_FILE
    suite_obj = load_suite(Path(suite) if suite else default_suite)
    paths = AblationPaths(main_paths, _suite_folder(suite_obj, default_suite))
    spec = suite_obj.profile(profile)
    selected = suite_obj.select(spec, rows)
    commit = current_commit()
    command = command or f"moeisr ablations --profile {profile}" + (f" --suite {suite_obj.path}" if paths.suite else "")
    main = load_experiments(main_paths, profile, overrides)
    moe = [name for name, e in main.items() if e.model.name == "moeisr"]
    for name in spec.sweep.models:
        if name not in moe:
            raise UserError(f"{suite_obj.path}: profiles.{profile}.sweep.models: {name!r} is not a main MoEISR "
                            f"experiment{hint(name, moe)}")  # fmt: skip
    experiments = {
        r.name: row_experiment(suite_obj, r, spec, main, main_paths.experiments, overrides) for r in selected
    }
    for r in selected:
        check_row(suite_obj, r, experiments[r.name], experiments[suite_obj.reference_of(r).name])
        if r.is_dense:
            moe_reference = suite_obj.base_reference(r.dense_for)
            if moe_reference.name in experiments:
                check_dense(suite_obj, r, experiments[r.name], experiments[moe_reference.name])
    grid = grid_of(spec)
    result = AblationResult(paths=paths, rows=selected, experiments=experiments)
    if suite_obj.selection is not None:
        result.heldout_split = check_heldout(suite_obj, experiments, spec)
    else:
        stages = [s for s in stages if s != "heldout"]  # nothing to choose: no held-out stage
    result.estimate = estimate(selected, experiments, spec, grid, main, result.heldout_split)
    steps = sorted({experiments[r.name].optim.max_steps for r in selected})
    log(
        f"moeisr ablations: profile {profile}, {len(selected)} rows ({', '.join(r.name for r in selected)}), "
        f"{'/'.join(map(str, steps))} fine-tuning steps each; stages {','.join(s for s in STAGES if s in stages)}; "
        f"results {paths.root}, cache {main_paths.cache_file}"
    )
    est = result.estimate
    held = f", held-out passes {_hours(est['heldout'])}" if "heldout" in est else ""
    log(
        f"expected from scratch on 2 CPU cores: train {_hours(est['train'])}, eval {_hours(est['eval'])}, sweep "
        f"{_hours(est['sweep'])}{held}; total {_hours(est['total'])} (docs/ablations.md, 'Budget')"
    )
    log(_training_left(selected, experiments, paths, profile))
    if result.heldout_split is not None:
        log(f"held-out split (the selection's only data): {_split_text(result.heldout_split)}")
    if plan_only:
        return result
    loaded = load_timings(paths.timings)
    timings = copy.deepcopy(loaded)
    timings.update(profile=profile, commit=commit, estimate_seconds={k: round(v) for k, v in est.items()})
    stage_times = timings.setdefault("stages", {})
    cache_store = ResultsCache(main_paths.cache_file)
    flops = ArchitectureFlops()

    # ---- the main job's checkpoints: the rows' starting points and the sweep's models ------------------------
    # the rows cannot start without their backbone; a report alone can leave out a sweep whose models do not exist yet
    required = {experiments[r.name].init_from for r in selected} - {None}
    sweep_names = set(spec.sweep.models) | {main[m].init_from for m in spec.sweep.models} - {None}
    optional = set()
    if "sweep" in stages:
        required |= sweep_names
    elif "report" in stages:
        optional = sweep_names - required
    result.main_checkpoints = _main_checkpoints(
        main, required, optional, main_paths, profile, train_main, device, progress, log
    )

    # ---- train ---------------------------------------------------------------------------------------------------
    started = time.monotonic()
    for r in selected:
        info = _row_checkpoint(r, experiments[r.name], paths, profile, result, "train" in stages, retrain, device,
                               progress, log)  # fmt: skip
        if info is not None:
            result.checkpoints[r.name] = info
    if "train" in stages:
        trained = [n for n, c in result.checkpoints.items() if c.status != "reused"]
        details = f"trained or bundled: {', '.join(trained) or 'none'}"
        record_stage(stage_times, "train", time.monotonic() - started, details, commit, bool(trained))

    entries = {n: checkpoint_entry(c.path, name=n, device=device) for n, c in result.checkpoints.items()}

    # ---- eval ----------------------------------------------------------------------------------------------------
    if "eval" in stages and entries:
        started = time.monotonic()
        _, result.rows_computed = evaluate(
            list(entries.values()), grid, cache_store, device=device, flops_fn=flops, progress=progress, commit=commit
        )
        result.matched = _matched_knobs(suite_obj, selected, entries, grid, log)
        for reference, knobs in _knobs_by_reference(suite_obj, selected, result.matched).items():
            _, n = evaluate([entries[reference]], Grid(grid.sets, grid.scales, knobs=knobs, limit=grid.limit),
                            cache_store, device=device, flops_fn=flops, progress=progress, commit=commit)  # fmt: skip
            result.rows_computed += n
        log(f"[eval] {result.rows_computed} row images computed now (the rest from {main_paths.cache_file})")
        record_stage(stage_times, "eval", time.monotonic() - started, f"{result.rows_computed} rows computed", commit,
                result.rows_computed > 0)  # fmt: skip

    # ---- heldout -------------------------------------------------------------------------------------------------
    if "heldout" in stages and entries:
        started = time.monotonic()
        result.heldout_computed = _heldout(result.heldout_split, entries, paths, device, commit, flops, log)
        log(f"[heldout] {len(result.heldout_computed)} rows measured now (the rest reused from {paths.heldout})")
        record_stage(stage_times, "heldout", time.monotonic() - started,
                     f"measured: {', '.join(result.heldout_computed) or 'none'}", commit,
                     bool(result.heldout_computed))  # fmt: skip

    # ---- sweep ---------------------------------------------------------------------------------------------------
    sweep_entries = {}
    if {"sweep", "report"} & set(stages):
        for name in [m for m in spec.sweep.models if {m, main[m].init_from} <= set(result.main_checkpoints)]:
            moe = checkpoint_entry(result.main_checkpoints[name].path, name=MODEL_NAMES.get(name, name), device=device)
            parent = main[name].init_from
            backbone = checkpoint_entry(
                result.main_checkpoints[parent].path, name=MODEL_NAMES.get(parent, parent), device=device
            )
            sweep_entries[name] = (moe, backbone)
            result.knobs[moe.name] = [*_calibrated_knobs(moe, grid, spec.sweep.points), None]
            shown = ", ".join("default" if k is None else f"{k:g}" for k in result.knobs[moe.name])
            log(f"[sweep] {moe.name}: knobs {shown}")
    if "sweep" in stages and sweep_entries:
        started = time.monotonic()
        from moeisr.metrics import load_lpips

        lpips_model = load_lpips(device)
        computed = 0
        for moe, backbone in sweep_entries.values():
            knob_grid = Grid(grid.sets, grid.scales, knobs=result.knobs[moe.name], limit=grid.limit)
            _, n = evaluate([backbone, moe], knob_grid, cache_store, device=device, flops_fn=flops,
                            progress=progress, commit=commit)  # fmt: skip
            computed += n
            computed += evaluate_reference_routers(
                [moe], grid, {moe.name: result.knobs[moe.name]}, spec.sweep.oracle_levels, spec.sweep.random_seeds,
                cache_store, flops, device=device, lpips_model=lpips_model, progress=progress, commit=commit,
            )  # fmt: skip
        result.sweep_computed = computed
        log(f"[sweep] {computed} rows computed now (the rest from {main_paths.cache_file})")
        record_stage(
            stage_times, "sweep", time.monotonic() - started, f"{computed} rows computed", commit, computed > 0
        )

    # ---- report --------------------------------------------------------------------------------------------------
    if "report" in stages:
        started = time.monotonic()
        if "eval" not in stages and entries:
            result.matched = _matched_knobs(suite_obj, selected, entries, grid, log)
        result.frames, meta_rows = _frames(suite_obj, selected, experiments, result, entries, sweep_entries, grid,
                                           spec, cache_store, log)  # fmt: skip
        result.meta = _meta(meta_rows, spec, grid, result, commit, command, main, suite_obj)
        result.written = _write_artefacts(result.frames, result.meta, paths, log)
        if suite_obj.selection is not None and paths.heldout.is_file():
            result.written.append(paths.heldout)  # the heldout stage's: the selection reads it with meta.json
        record_stage(stage_times, "report", time.monotonic() - started, f"{len(result.written)} raw artefacts",
                     commit, True)  # fmt: skip
    save_timings(paths.timings, timings, loaded)
    return result


def _main_checkpoints(main, required, optional, paths: Paths, profile, train_main, device, progress, log) -> dict:
    """The main job's checkpoints of `required` and `optional` (parents first), through prepare_checkpoint.

    A missing required checkpoint is a UserError (unless `train_main` trains it); a missing optional one is noted
    and left out."""
    required, optional = with_ancestors(main, required), with_ancestors(main, optional)
    out: dict[str, CheckpointInfo] = {}
    for role in ROLES:
        name = role.experiment
        if name not in required | optional:
            continue
        experiment = main[name]
        if experiment.init_from and experiment.init_from not in out:
            log(f"[main] {name}: left out (its parent {experiment.init_from} is not available)")
            continue
        parent = out[experiment.init_from].path if experiment.init_from else None
        try:
            out[name] = prepare_named(
                name, experiment, paths, profile, parent=parent, log=log, stage="main", allow_training=train_main,
                device=device, progress=progress,
            )  # fmt: skip
        except UserError as exc:
            if name not in required:
                log(f"[main] {name}: left out of the report ({exc})")
                continue
            if train_main:
                raise
            raise UserError(
                f"{exc} -- the ablations start from the main job's checkpoints: run `moeisr reproduce --profile "
                f"{profile} --stages train` first (or pass --train-main)"
            ) from None
    return out


def _row_checkpoint(row: Row, experiment, paths: AblationPaths, profile, result, allow, retrain, device, progress, log):
    """The row's bundle via prepare_checkpoint; None (with a note) when it is not trained and training is off."""
    parent = result.main_checkpoints[experiment.init_from].path if experiment.init_from else None
    try:
        return prepare_named(
            row.name, experiment, paths, profile, parent=parent, log=log, retrain=retrain, allow_training=allow,
            device=device, progress=progress,
        )  # fmt: skip
    except UserError as exc:
        if allow:
            raise
        log(f"[train] {row.name}: skipped ({exc})")
        return None


def _heldout(split: dict, entries: dict[str, ModelEntry], paths: AblationPaths, device, commit, flops, log) -> list:
    """Measure every row's checkpoint on the held-out split (`Validator.measure`: per crop PSNR, GFLOPs, shares,
    decoder cost) into `heldout.csv`, reusing a row's records while its checkpoint hash and the split are unchanged.
    Returns the rows measured now. The split is the one `check_heldout` accepted: never a benchmark set. Jobs over
    different rows may run at once: the file is re-read and merged under a lock when this job's rows are written."""
    from moeisr.train.validation import Validator

    validator = Validator(split["set"], split["scales"], split["limit"], crop=split["crop"])
    expected = sum(len(pairs) for pairs in validator.pairs().values())
    old = _read_heldout(paths.heldout)
    parts, measured = [], []
    for name, entry in entries.items():
        if old is not None:
            mine = old[(old["row"] == name) & (old["ckpt_hash"] == entry.ckpt_hash) & (old["dataset"] == split["set"])]
            crop = mine["crop"].fillna(-1) == (split["crop"] if split["crop"] is not None else -1)
            mine = mine[crop & mine["scale"].isin([float(s) for s in split["scales"]])]
            if len(mine) == expected:
                parts.append(mine.dropna(axis=1, how="all"))
                continue
        started = time.monotonic()
        frame = pd.DataFrame(validator.measure(entry.model, device, flops))
        frame.insert(0, "row", name)
        frame.insert(1, "ckpt_hash", entry.ckpt_hash)
        frame["commit"] = commit
        parts.append(frame)
        measured.append(name)
        psnr = frame.groupby("scale")["psnr"].mean()
        shown = ", ".join(f"x{s:g} {v:.3f} dB" for s, v in psnr.items())
        log(f"[heldout] {name}: {split['set']} {shown} ({time.monotonic() - started:.0f} s)")
    with FileLock(paths.heldout):
        current = _read_heldout(paths.heldout)  # as other jobs left it: their rows' records stay
        if current is not None:
            parts.insert(0, current[~current["row"].isin(list(entries))])
        parts = [p for p in parts if len(p)]
        if parts:
            atomic_write_text(paths.heldout, pd.concat(parts, ignore_index=True).to_csv(index=False))
    return measured


def _read_heldout(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path, dtype={"row": str, "ckpt_hash": str, "image": str}) if path.is_file() else None


def _grid_inputs(grid: Grid, device) -> tuple[list, list]:
    """The grid's LR images (1×3×h×w on `device`) and output sizes, every set, image and scale."""
    lrs, sizes = [], []
    for dataset in grid.sets:
        for path in list_images(dataset, limit=grid.limit.get(dataset)):
            hr_full = load_image(path)
            for scale in grid.scales:
                hr, lr = degrade(hr_full, scale)
                lrs.append(lr[None].to(device))
                sizes.append(tuple(hr.shape[-2:]))
    return lrs, sizes


def _calibrated_knobs(entry: ModelEntry, grid: Grid, points: int) -> list[float]:
    """`routers.sweep_knobs` on the grid's LR images (every set, image and scale): deterministic per checkpoint."""
    lrs, sizes = _grid_inputs(grid, next(entry.model.parameters()).device)
    return sweep_knobs(entry.model, lrs, sizes, points)


def _matched_knobs(suite: Suite, selected, entries: dict, grid: Grid, log) -> dict[str, float]:
    """Row → its reference's knob at the row's decoder cost, for the factor rows whose default routing's cost
    differs from the reference's by more than MATCH_MIN_COST (calibrated on the grid's LR images)."""
    pairs = [(r.name, suite.reference_of(r).name) for r in selected if r.factor and r.name in entries]
    pairs = [(row, ref) for row, ref in pairs if ref in entries]
    if not pairs:
        return {}
    lrs, sizes = _grid_inputs(grid, next(entries[pairs[0][0]].model.parameters()).device)
    # each reference's calibration once, however many rows it stands beside (`routers.matched_knob`, unrolled)
    references = {
        ref: default_routing_cost(entries[ref].model, lrs, sizes) for ref in dict.fromkeys(r for _, r in pairs)
    }
    matched = {}
    for row, ref in pairs:
        row_cost = default_routing_cost(entries[row].model, lrs, sizes)[2]
        logits, costs, ref_cost = references[ref]
        if abs(row_cost - ref_cost) > MATCH_MIN_COST:
            knob = matched[row] = knob_at_cost(logits, costs, row_cost)
            log(f"[eval] {row}: decoder cost {row_cost:.3f} of the deepest vs {ref_cost:.3f} for {ref}; "
                f"{ref} re-routed to it at knob {knob:g}")  # fmt: skip
    return matched


def _knobs_by_reference(suite: Suite, selected, matched: dict[str, float]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in selected:
        if r.name in matched:
            out.setdefault(suite.reference_of(r).name, []).append(matched[r.name])
    return {ref: sorted(set(knobs)) for ref, knobs in out.items()}


# -------------------------------------------------------------------------------------------- frames


def _cached(cache: ResultsCache, keys: Sequence) -> pd.DataFrame:
    return cache.select(keys)


def _keys(entry: ModelEntry, grid: Grid, labels: Sequence) -> list:
    return grid_keys([entry], grid, knobs={entry.name: list(labels)})


def _frames(suite: Suite, selected, experiments, result, entries, sweep_entries, grid, spec, cache, log):
    """The raw tidy frames (rows, matched, sweep) and each row's metadata (`costs`: its experts' relative costs)."""
    meta_rows = []
    for r in selected:
        if r.name not in entries:
            continue
        exp, info, model = experiments[r.name], result.checkpoints[r.name], entries[r.name].model
        ref = experiments[suite.reference_of(r).name]
        factor = suite.factors.get(r.factor) if r.factor else None
        if r.is_dense:
            value = f"dense {exp.model.name}, the equal-budget target of {r.dense_for}"
        elif factor:
            value = factor_value(factor, exp)
        else:
            value = "; ".join(f"{f.label} {factor_value(f, exp)}" for f in _factors_of(suite, r.base))
        routed = hasattr(model, "experts")  # a dense row decodes every pixel with its one MLP: cost 1
        line = {
            "row": r.name,
            "base": r.base,
            "reference": suite.reference_of(r).name,
            "factor": r.factor,
            "factor_label": factor.label if factor else None,
            "value": value,
            "reference_value": factor_value(factor, ref) if factor else None,
            "steps": info.meta.get("steps"),
            "config_hash": exp.config_hash,
            "ckpt_hash": entries[r.name].ckpt_hash,
            "train_commit": info.meta.get("commit"),
            "n_experts": model.n_experts if routed else 1,
            "costs": model.experts.relative_costs().tolist() if routed else [1.0],
        }
        if _extended(suite):  # the recipe suite's: what the selection needs (the main suite's meta is unchanged)
            line.update(dense_for=r.dense_for, set=dict(r.set))
        meta_rows.append(line)
    meta = pd.DataFrame(meta_rows)
    rows = _cached(cache, [k for e in entries.values() for k in _keys(e, grid, [None])])
    missing = len(entries) * len(_keys(next(iter(entries.values())), grid, [None])) - len(rows) if entries else 0
    if missing > 0:
        log(f"[report] WARNING: {missing} row images are not evaluated yet; the tables cover the rest")
    if len(rows) and len(meta):
        kept = meta.drop(columns=["costs", "set"], errors="ignore").rename(columns={"row": "model"})
        rows = rows.merge(kept, on=["model", "ckpt_hash"])
    matched = _matched_rows(suite, selected, result.matched, entries, grid, cache)

    parts = []
    for moe, backbone in sweep_entries.values():
        knobs = result.knobs[moe.name]
        labels = reference_labels(knobs, spec.sweep.oracle_levels, spec.sweep.random_seeds)
        learned = _cached(cache, _keys(moe, grid, knobs))
        references = _cached(cache, _keys(moe, grid, labels))
        base = _cached(cache, _keys(backbone, grid, [None]))
        for frame, router in ((learned, "learned"), (references, None), (base, "backbone")):
            if frame.empty:
                continue
            frame = frame.copy()
            frame.insert(0, "family", moe.name)
            frame.insert(1, "router", router or frame["knob"].str.partition(":")[0])
            parts.append(frame)
    sweep = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return {"rows": rows, "matched": matched, "sweep": sweep}, meta_rows


def _matched_rows(suite: Suite, selected, matched: dict[str, float], entries, grid: Grid, cache) -> pd.DataFrame:
    """The cached per-image rows of each reference re-routed to a factor row's cost; `row` names that factor row."""
    parts = []
    for r in selected:
        if r.name in matched:
            reference = entries[suite.reference_of(r).name]
            frame = _cached(cache, _keys(reference, grid, [matched[r.name]]))
            if len(frame):
                parts.append(frame.assign(row=r.name))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _extended(suite: Suite) -> bool:
    """Whether the suite's meta carries the recipe selection's fields (a selection rule or dense rows)."""
    return suite.selection is not None or any(r.is_dense for r in suite.rows)


def _factors_of(suite: Suite, base: str) -> list:
    used = [r.factor for r in suite.rows if r.base == base and r.factor]
    return [suite.factors[f] for f in dict.fromkeys(used)]


# -------------------------------------------------------------------------------------------- artefacts


def _meta(meta_rows: list[dict], spec: ProfileSpec, grid: Grid, result, commit, command, main, suite: Suite) -> dict:
    """meta.json: what the report needs besides the tidy rows (it reads no spec, checkpoint or data folder); a suite
    with a selection rule adds its name, the rule's parameters, the held-out split and the factors' labels and keys."""
    meta = _main_meta(meta_rows, spec, grid, result, commit, command, main)
    if suite.selection is not None:
        meta.update(
            suite=suite.name,
            selection=suite.selection.to_dict(),
            heldout=result.heldout_split,
            factors={n: {"label": f.label, "keys": list(f.keys)} for n, f in suite.factors.items()},
            planned_rows=[r.name for r in suite.select(spec)],  # the rule is final only once all have held-out rows
        )
    return meta


def _main_meta(meta_rows: list[dict], spec: ProfileSpec, grid: Grid, result, commit, command, main) -> dict:
    return {
        "profile": spec.name,
        "commit": commit,
        "command": command,
        "grid": {
            "sets": list(grid.sets),
            "scales": [float(s) for s in grid.scales],
            "limit": dict(grid.limit),
            "set_sizes": set_sizes(grid.sets),
        },
        "sweep": {
            "points": spec.sweep.points,
            "oracle_levels": [float(v) for v in spec.sweep.oracle_levels],
            "random_seeds": list(spec.sweep.random_seeds),
            "knobs": {family: [knob_label(k) for k in knobs] for family, knobs in result.knobs.items()},
        },
        "main_steps": {m: main[m].optim.max_steps for m in dict.fromkeys(r.base for r in result.rows)},
        "matched_knobs": {row: knob_label(knob) for row, knob in result.matched.items()},
        "rows": meta_rows,
    }


def _write_artefacts(frames: dict[str, pd.DataFrame], meta: dict, paths: AblationPaths, log) -> list[Path]:
    written = [atomic_write_text(paths.csv(name), frames[name].to_csv(index=False)) for name in ABLATION_RAW_CSVS]
    written.append(atomic_write_text(paths.meta, json.dumps(meta, indent=1, ensure_ascii=False) + "\n"))
    log(f"[report] wrote {', '.join(str(p) for p in written)}")
    return written
