"""`moeisr reproduce`: train (or reuse) every model, evaluate the grid, regenerate the tables, figures and REPORT.md.

Stages, each optional, always in this order:

- **train**: for each experiment of `ROLES` (parents first) reuse the bundled checkpoint
  `<results>/checkpoints/<experiment>.pt` when the config hash it records equals the experiment's, else train
  into `<runs>/<profile>/<experiment>` (resuming from its last.pt, or taking its finished final.pt), then bundle
  the final weights (weights only, see `bundle.py`). Every decision is printed with its reason.
- **eval**: bicubic and every evaluated model of `ROLES` on the profile's grid (the experiments' `eval:` section), plus
  `LARGE_SCALES[profile]` on the sets whose evaluated images all keep an LR side of at least `MIN_LR_SIDE`
  pixels; the results cache (`<cache>/results.jsonl`) makes a re-run compute only what is missing.
- **check**: the reproduction check (`moeisr.evaluate.recheck`): a fixed, stratified sample of the grid's rows
  (one seeded image per set and scale at ×2–×4, for every main model) is recomputed from the bundled checkpoints
  without the cache and compared with the cached rows the tables use (≤ 0.01 dB); the comparison is written to
  `<results>/reproduction.csv` and a row outside the tolerance fails the run. With `full`, the eval stage
  recomputes every row into a fresh cache file instead, and those rows are what is compared.
- **report**: main.csv, tables/, figures/, REPORT.md and timings.json; the rows computed in this run's eval stage
  are also compared with the `main.csv` found before it.

`seeds` (on by default; CLI `--no-seeds` leaves them out) adds the seed replicas `SEED_ROLES` (issue 21, item 3):
the MoEISR models and their equal-budget controls fine-tuned again from the same parent bundles with `train.seed`
1 and 2 (experiment `<experiment>_seed<k>`, model column `<model>-seed<k>`), evaluated at the grid's scales up to
×4 at the default setting; the report then has a Seeds table and the reading weighs MoEISR's ΔPSNR against its
seed spread. Their cpu bundles are committed, so the default cpu run trains nothing for them.

`models` (CLI `--models`) restricts the train and eval stages to some rows of the `model` column and the experiments
they start from, so that separate jobs (e.g. one per model on a cluster) can share one cache; the report stage then
runs alone, once every row is there.

Default folders: runs `$MOEISR_RUNS` or `<repo>/runs`; results `<repo>/results` (cpu), `<repo>/results/paper`
(paper), `<runs>/<profile>/results` (smoke and any other profile); cache `$MOEISR_CACHE/<profile>`, else
`<runs>/cache/<profile>` (for cpu that is the committed snapshot, so a fresh clone reads it by default).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from moeisr.artefacts import MAIN_CSV, RECHECK_CSV, RUN_FILE, TIMINGS_FILE
from moeisr.config import Experiment, load_experiment, with_loaded_parent
from moeisr.data.benchmark import list_images
from moeisr.data.images import image_size, load_image
from moeisr.data.roots import repo_root
from moeisr.errors import UserError
from moeisr.evaluate import pictures, recheck
from moeisr.evaluate.cache import REQUIRED_COLUMNS, ResultsCache, key_of
from moeisr.evaluate.recheck import read_rows_csv
from moeisr.evaluate.runner import Grid, bicubic_entry, checkpoint_entry, evaluate, grid_keys
from moeisr.evaluate.tidy import dataset_label, model_rank, replica_name, sort_cells
from moeisr.flops.per_image import ArchitectureFlops, encoder_flops_per_lr_pixel
from moeisr.io import atomic_write_text
from moeisr.models.base import compute_knob
from moeisr.pipeline.bundle import CheckpointInfo, prepare_named
from moeisr.pipeline.timings import load_timings, record_stage, save_timings
from moeisr.provenance import current_commit, machine

STAGES = ("train", "eval", "check", "report")
DEFAULT_RESULTS = {"cpu": Path("results"), "paper": Path("results") / "paper"}  # relative to the repository


@dataclass(frozen=True)
class Role:
    """An experiment file of `experiments/` and the name its rows carry in the `model` column.

    evaluated: False for an experiment reproduced only as the parent of others (its grid rows are not computed).
    seed: a seed replica's `train.seed` (None: the experiment as specified); a replica starts from the same parent
    bundle as the experiment and is evaluated at the grid's scales up to ×4 only (`seed_grid`).
    """

    experiment: str
    model: str
    evaluated: bool = True
    seed: int | None = None

    @property
    def name(self) -> str:
        """The name of its bundle, run folder and log: the experiment's, `<experiment>_seed<k>` for a replica."""
        return self.experiment if self.seed is None else f"{self.experiment}_seed{self.seed}"


def seed_role(role: Role, seed: int) -> Role:
    """The replica of `role` trained with `train.seed=seed` (model column `<model>-seed<seed>`)."""
    return Role(role.experiment, replica_name(role.model, seed), seed=seed)


ROLES = (  # parents before the experiments initialised from them
    Role("liif", "liif"),
    Role("lte", "lte"),
    # The backbones trained on until their held-out validation stopped rising (issue 20, item 0): recipe v2's
    # models, the dense controls and the LMF models' encoders start from them.
    Role("liif_converged", "liif-converged"),
    Role("lte_converged", "lte-converged"),
    # recipe v1: fine-tuned from the 6000-step backbones
    Role("moeisr_liif", "moeisr-liif"),
    Role("moeisr_lte", "moeisr-lte"),
    Role("liif_equal", "liif-equal-budget"),
    Role("lte_equal", "lte-equal-budget"),
    # recipe v2 (docs/moeisr.md §10) and the dense controls (docs/dense_baselines.md), all at v1's budget
    Role("moeisr_liif_v2", "moeisr-liif-v2"),
    Role("moeisr_lte_v2", "moeisr-lte-v2"),
    Role("liif_equal_v2", "liif-equal-budget-v2"),
    Role("lte_equal_v2", "lte-equal-budget-v2"),
    *(Role(f"liif_d{k}", f"liif-d{k}") for k in (1, 2, 3)),
    *(Role(f"lte_d{k}", f"lte-d{k}") for k in (1, 2)),
    Role("lm_liif", "lm-liif"),
    Role("lm_lte", "lm-lte"),
)
# Seed replicas (issue 21, item 3): the models whose comparison is the report's verdict, twice more each. Part of
# the default run; `reproduce(..., seeds=False)` (CLI --no-seeds) leaves them out.
SEEDS = (1, 2)
SEEDED = ("moeisr_liif_v2", "moeisr_lte_v2", "liif_equal_v2", "lte_equal_v2")  # the headline comparison's
SEED_ROLES = tuple(seed_role(r, k) for r in ROLES if r.experiment in SEEDED for k in SEEDS)
SEED_MAX_SCALE = 4.0  # replicas are evaluated at the grid's scales up to this one
# LMF's CMSR sweep (the knob `cmsr_mse`, official units: MSE on [-1, 1] images; 2e-5 is the official default):
# extra rows of the LMF models at the grid's scales above ×4, where CMSR acts, drawn as curves in the figure.
CMSR_KNOBS = (5e-6, 2e-5, 1e-4)
ALL_DEEPEST = -math.inf  # MoEISR's routing knob that sends every pixel to its deepest expert
LARGE_SCALES: dict[str, tuple[float, ...]] = {"paper": (18.0, 24.0, 30.0)}  # cpu: skipped, too costly on 2 cores
MIN_LR_SIDE = 16  # px: a set gets the large scales only if all its evaluated LR images keep this much
FIGURE_SCALE = 4  # integer, so that the crops' LR windows align exactly with the HR
# the committed cpu checkpoints must stay small (~33 MB with recipe v2 and the dense controls)
BUNDLE_LIMIT_MB = {"cpu": 40.0}
SEED_BUNDLE_LIMIT_MB = {"cpu": 20.0}  # and the seed replicas' (4 models × 2 seeds, ~19 MB at the cpu widths)


@dataclass(frozen=True)
class Paths:
    """Where the pipeline reads and writes."""

    results: Path
    runs: Path  # root: runs of a profile go to runs/<profile>/<experiment>
    cache: Path  # folder of results.jsonl
    experiments: Path

    @property
    def bundle(self) -> Path:
        return self.results / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.results / "logs"

    @property
    def tables(self) -> Path:
        return self.results / "tables"

    @property
    def figures(self) -> Path:
        return self.results / "figures"

    @property
    def main_csv(self) -> Path:
        return self.results / MAIN_CSV

    @property
    def report(self) -> Path:
        return self.results / "REPORT.md"

    @property
    def timings(self) -> Path:
        return self.results / TIMINGS_FILE

    @property
    def cache_file(self) -> Path:
        return self.cache / "results.jsonl"

    def run_dir(self, profile: str, experiment: str) -> Path:
        return self.runs / profile / experiment


def default_paths(
    profile: str,
    results: str | os.PathLike | None = None,
    runs: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    experiments: str | os.PathLike | None = None,
) -> Paths:
    """The pipeline's folders: explicit arguments first, then the environment, then the defaults (module docstring)."""
    repo = repo_root()
    runs_root = Path(runs or os.environ.get("MOEISR_RUNS") or repo / "runs").expanduser()
    if results is None:
        results = repo / DEFAULT_RESULTS[profile] if profile in DEFAULT_RESULTS else runs_root / profile / "results"
    if cache is None:
        cache = Path(os.environ.get("MOEISR_CACHE") or runs_root / "cache").expanduser() / profile
    experiments = Path(experiments) if experiments is not None else repo / "experiments"
    if not experiments.is_dir():
        raise UserError(f"{experiments}: experiments folder not found; run from a checkout of the repository")
    return Paths(Path(results).expanduser(), runs_root, Path(cache).expanduser(), experiments)


def load_experiments(
    paths: Paths, profile: str, overrides: Sequence[str] = (), roles: Sequence[Role] = ROLES
) -> dict[str, Experiment]:
    """Every experiment of `roles` under `profile` with `overrides`, keyed by role name (`Role.name`).

    An `init_from` experiment's parent is replaced by the loaded (overridden) parent, so that the chained config
    hashes describe what is actually trained. A seed replica is its experiment with `train.seed=<seed>` and
    `name=<role name>` after `overrides` (so its config hash differs, its parent is the experiment's); UserError
    when that seed is the experiment's own (listed before it in `roles`).
    """
    loaded: dict[str, Experiment] = {}
    for role in roles:
        extra = [] if role.seed is None else [f"train.seed={role.seed}", f"name={role.name}"]
        experiment = load_experiment(paths.experiments / f"{role.experiment}.yaml", profile, [*overrides, *extra])
        main = loaded.get(role.experiment) if role.seed is not None else None
        if main is not None and main.train.seed == role.seed:
            raise UserError(
                f"{experiment.path}: the seed replica {role.name} would repeat the experiment, whose train.seed is "
                f"already {role.seed}"
            )
        loaded[role.name] = with_loaded_parent(
            experiment,
            loaded,
            f"{experiment.path}: init_from {experiment.init_from!r} is not one of the reproduced "
            f"experiments ({', '.join(r.name for r in roles)})",
        )
    return loaded


# ------------------------------------------------------------------------------------------ grid


def eval_grid(experiments: dict[str, Experiment]) -> Grid:
    """The evaluation grid of the experiments' `eval:` section (which must be the same for all of them)."""
    specs = {name: e.eval for name, e in experiments.items()}
    first_name, first = next(iter(specs.items()))
    for name, spec in specs.items():
        if spec != first:
            raise UserError(
                f"{experiments[name].path}: its eval section differs from {first_name}'s; the reproduced "
                "experiments must share one grid (set it in profiles.yaml)"
            )
    limits = {s: first.limit_for(s) for s in first.sets if first.limit_for(s) is not None}
    return Grid(sets=list(first.sets), scales=[float(s) for s in first.scales], knobs=list(first.knobs), limit=limits)


def seed_grid(grid: Grid) -> Grid | None:
    """The seed replicas' grid: `grid`'s sets and scales up to `SEED_MAX_SCALE`, default setting only; None when
    the grid has no such scale."""
    scales = [s for s in grid.scales if s <= SEED_MAX_SCALE]
    if not scales:
        return None
    return Grid(sets=list(grid.sets), scales=scales, knobs=[None], limit=dict(grid.limit), protocol=grid.protocol)


def large_scale_grid(grid: Grid, scales: Sequence[float], root=None) -> tuple[Grid | None, list[str]]:
    """(Grid of `scales` on the sets whose evaluated images are large enough, or None; the sets left out)."""
    scales = [float(s) for s in scales if float(s) not in grid.scales]
    if not scales:
        return None, []
    need = MIN_LR_SIDE * max(scales)
    kept, skipped = [], []
    for name in grid.sets:
        files = list_images(name, root, grid.limit.get(name))
        (kept if all(min(image_size(f)) >= need for f in files) else skipped).append(name)
    if not kept:
        return None, skipped
    limits = {s: grid.limit[s] for s in kept if s in grid.limit}
    return Grid(sets=kept, scales=scales, knobs=grid.knobs, limit=limits, protocol=grid.protocol), skipped


def set_sizes(sets: Sequence[str], root=None) -> dict[str, int]:
    """Number of images in each set (to label subsets as 'Urban100 (first 20)')."""
    return {name: len(list_images(name, root)) for name in sets}


# ------------------------------------------------------------------------------------------ rows


def grid_rows(cache: ResultsCache, keys: Sequence, config_hashes: dict[str, str]) -> pd.DataFrame:
    """The cache's rows for `keys` (tidy, one per key), with a `config_hash` column, in model/dataset/scale order."""
    selected = cache.select(keys)
    if selected.empty:
        return selected
    selected.insert(REQUIRED_COLUMNS.index("ckpt_hash") + 1, "config_hash", selected["model"].map(config_hashes))
    selected = sort_cells(selected)  # dataset, scale, knob, image; then models in MODEL_ORDER (stable)
    selected = selected.sort_values("model", key=lambda c: c.map(model_rank), kind="stable")  # replicas after theirs
    return selected.reset_index(drop=True)


# --------------------------------------------------------------------------------------- result


@dataclass
class ReproduceResult:
    """What `reproduce` did: folders, the checkpoint of every experiment, rows computed now, the grid's rows."""

    paths: Paths
    checkpoints: dict[str, CheckpointInfo] = field(default_factory=dict)
    rows_computed: int = 0
    rows: pd.DataFrame | None = None
    check: pd.DataFrame | None = None
    timings: dict = field(default_factory=dict)
    mode: str = "verified"  # or "full": every row recomputed
    computed_keys: set = field(default_factory=set)  # the grid keys the eval stage computed in this run
    recheck: pd.DataFrame | None = None  # the check stage's per-row comparison (`recheck.compare`)


# ------------------------------------------------------------------------------------- pipeline


@dataclass
class Setup:
    """What a run of `profile` covers: its folders, experiments, selected roles and grids (`setup`)."""

    profile: str
    paths: Paths
    experiments: dict[str, Experiment]
    all_roles: tuple[Role, ...]  # ROLES, and SEED_ROLES with seeds
    roles: list[Role]  # the selected ones (`models`) and the experiments they start from
    with_bicubic: bool
    grid: Grid
    large: Grid | None  # the large scales' grid, if any set keeps MIN_LR_SIDE there
    too_small: list[str]  # the sets left out of the large scales

    def eval_runs(self, entries, replicas=()) -> list[tuple[Grid, list]]:
        """(grid, the entries evaluated on it) of the eval stage: the main grid and the large scales for `entries`,
        their knob rows (`knob_runs`), and the seed replicas on `seed_grid`."""
        runs = [(g, list(entries)) for g in (self.grid, self.large) if g is not None] + knob_runs(self.grid, entries)
        replica_grid = seed_grid(self.grid)
        if replicas and replica_grid is not None:
            runs.append((replica_grid, list(replicas)))
        return runs


def setup(
    profile: str = "cpu",
    *,
    results: str | os.PathLike | None = None,
    runs: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    large_scales: Sequence[float] | None = None,
    models: Sequence[str] | None = None,
    seeds: bool = True,
) -> Setup:
    """The folders, experiments, roles and grids of a run (the arguments as in `reproduce`); nothing is trained,
    evaluated or written. UserError for an unknown model or a broken experiment file."""
    paths = default_paths(profile, results, runs, cache)
    all_roles = (*ROLES, *SEED_ROLES) if seeds else ROLES
    experiments = load_experiments(paths, profile, overrides, all_roles)
    roles, with_bicubic = _selected_roles(models, experiments, all_roles)
    grid = eval_grid(experiments)
    large, too_small = large_scale_grid(grid, LARGE_SCALES.get(profile, ()) if large_scales is None else large_scales)
    return Setup(profile, paths, experiments, all_roles, roles, with_bicubic, grid, large, too_small)


def reproduce(
    profile: str = "cpu",
    *,
    stages: Sequence[str] = STAGES,
    retrain: bool = False,
    results: str | os.PathLike | None = None,
    runs: str | os.PathLike | None = None,
    cache: str | os.PathLike | None = None,
    device: str = "cpu",
    overrides: Sequence[str] = (),
    large_scales: Sequence[float] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    command: str | None = None,
    models: Sequence[str] | None = None,
    full: bool = False,
    seeds: bool = True,
) -> ReproduceResult:
    """Run the stages (module docstring) for `profile` and return what was done.

    large_scales: extra scales for large images (default `LARGE_SCALES.get(profile, ())`). overrides: `key=value`
    spec overrides applied to every experiment (they change the config hashes of hashed keys). `log` receives one
    line per decision. models: train and evaluate only these rows of the `model` column (`MODEL_NAMES`; the
    experiments they start from are prepared too), e.g. one job per model on a cluster sharing the cache; the
    report needs every model, so `models` cannot be combined with the report stage. Raises UserError for
    user-fixable problems (an unknown stage or model, a run folder of another configuration, a missing checkpoint
    when the train stage is skipped). full: recompute every row (into `<cache>/full-<commit>.jsonl`) instead of
    reusing the cache and rechecking a sample; a recheck outside the tolerance raises UserError after the report.
    seeds: also train and evaluate the seed replicas `SEED_ROLES` (module docstring); on by default, their cpu
    bundles being committed.
    """
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise UserError(f"unknown stage {unknown[0]!r}; choose from {', '.join(STAGES)}")
    if models is not None and "report" in stages:
        raise UserError(
            "the report stage needs every model; with --models, run --stages train,eval (then the report alone)"
        )
    job = setup(profile, results=results, runs=runs, cache=cache, overrides=overrides, large_scales=large_scales,
                models=models, seeds=seeds)  # fmt: skip
    paths, experiments, roles, all_roles, grid = job.paths, job.experiments, job.roles, job.all_roles, job.grid
    large, too_small = job.large, job.too_small
    commit = current_commit()
    command = command or f"moeisr reproduce --profile {profile}"
    result = ReproduceResult(paths=paths)
    loaded = load_timings(paths.timings)
    timings = copy.deepcopy(loaded)
    timings.update(profile=profile, commit=commit)
    stage_times = timings.setdefault("stages", {})
    only = "" if models is None else f" ({','.join(models)})"  # partial jobs' timings are kept apart
    log(
        f"moeisr reproduce: profile {profile}, stages {','.join(s for s in STAGES if s in stages)}{only}; "
        f"results {paths.results}, runs {paths.runs / profile}, cache {paths.cache_file}"
    )

    # ---- train (or reuse) -------------------------------------------------------------------------
    started = time.monotonic()
    checkpoints: dict[str, CheckpointInfo] = {}
    for role in roles:
        experiment = experiments[role.name]
        parent = checkpoints[experiment.init_from].path if experiment.init_from else None
        checkpoints[role.name] = prepare_named(
            role.name, experiment, paths, profile, parent=parent, log=log, retrain=retrain,
            allow_training="train" in stages, device=device, progress=progress,
        )  # fmt: skip
    result.checkpoints = checkpoints
    bundle_mb = {"main": 0.0, "seed": 0.0}  # the main roles' bundles and the seed replicas', each with its budget
    for role in roles:
        bundle_mb["main" if role.seed is None else "seed"] += checkpoints[role.name].path.stat().st_size / 1e6
    total_mb = sum(bundle_mb.values())
    for kind, limits in (("main", BUNDLE_LIMIT_MB), ("seed", SEED_BUNDLE_LIMIT_MB)):
        limit = limits.get(profile)
        if limit is not None and bundle_mb[kind] > limit:
            what = "bundled checkpoints" if kind == "main" else "seed replicas' bundled checkpoints"
            log(f"[train] WARNING: the {what} take {bundle_mb[kind]:.1f} MB, above the {limit:.0f} MB budget")
    if "train" in stages:
        trained = [n for n, c in checkpoints.items() if c.status != "reused"]
        details = f"trained or bundled: {', '.join(trained) or 'none'}; bundle {total_mb:.1f} MB"
        record_stage(stage_times, f"train{only}", time.monotonic() - started, details, commit, did_work=bool(trained))
    timings.setdefault("experiments", {}).update({name: info.summary() for name, info in checkpoints.items()})

    # ---- evaluate ---------------------------------------------------------------------------------
    evaluated = [r for r in roles if r.evaluated and (models is None or r.model in models)]
    entries = [bicubic_entry()] if job.with_bicubic else []
    entries += [
        checkpoint_entry(checkpoints[r.name].path, name=r.model, device=device) for r in evaluated if r.seed is None
    ]
    replicas = [checkpoint_entry(checkpoints[r.name].path, name=r.model, device=device)
                for r in evaluated if r.seed is not None]  # fmt: skip
    replica_grid = seed_grid(grid)
    cache_file = paths.cache / f"full-{commit}.jsonl" if full else paths.cache_file
    cache_store = ResultsCache(cache_file)
    runs = job.eval_runs(entries, replicas)
    keys = list(dict.fromkeys(k for g, on in runs for k in grid_keys(on, g)))
    result.mode = "full" if full else "verified"
    if "eval" in stages:
        started = time.monotonic()
        flops = ArchitectureFlops()  # the equal-budget backbones reuse their backbone's counts
        for g, on in runs:
            _, computed = evaluate(
                on, g, cache_store, device=device, flops_fn=flops, progress=progress, commit=commit,
                computed=result.computed_keys,
            )  # fmt: skip
            result.rows_computed += computed
        log(
            f"[eval] {result.rows_computed} rows computed now, {len(keys) - result.rows_computed} reused from "
            f"{cache_file}"
        )
        details = f"{result.rows_computed} of {len(keys)} rows computed (the rest from the cache)"
        seconds = time.monotonic() - started
        record_stage(stage_times, f"eval{only}", seconds, details, commit, did_work=result.rows_computed > 0)

    # ---- check ------------------------------------------------------------------------------------
    if "check" in stages and not full:
        started = time.monotonic()
        items = recheck.sample_items(entries, grid, MODEL_NAMES)
        if replicas and replica_grid is not None:  # checked like the main models, on the same sampled images
            items += recheck.sample_items(replicas, replica_grid, [e.name for e in replicas])
        log(f"[check] recomputing {len(items)} sampled rows from the checkpoints (seed {recheck.SAMPLE_SEED})")
        fresh = recheck.recompute(
            items, grid, device=device, flops_fn=ArchitectureFlops(), progress=progress, commit=commit
        )
        comparison = recheck.compare(fresh, cache_store.select(keys))
        paths.results.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.results / RECHECK_CSV, comparison.to_csv(index=False))
        result.recheck = comparison
        for _, r in recheck.summary(comparison).iterrows():
            log(
                f"[check] {r['model']}: {int(r['recomputed'])} rows, max |ΔPSNR| {r['max_abs_dpsnr']:.4f} dB, "
                f"{int(r['outside'])} outside the tolerance"
            )
        details = f"{len(comparison)} sampled rows recomputed and compared"
        record_stage(stage_times, "check", time.monotonic() - started, details, commit, did_work=True)

    # ---- report: publish the data the report draws ----------------------------------------------
    if "report" in stages:
        started = time.monotonic()
        hashes = {r.model: experiments[r.name].config_hash for r in all_roles} | {"bicubic": ""}
        rows = grid_rows(cache_store, keys, hashes)
        if rows.empty:
            raise UserError(f"{cache_file} holds no row of this grid; run the eval stage first")
        missing = len(keys) - len(rows)
        if missing:
            log(
                f"[report] WARNING: {missing} of {len(keys)} grid rows are not in {paths.cache_file}; "
                "the tables cover the rest (run the eval stage to fill them)"
            )
        result.rows = rows
        eval_check = _eval_stage_check(read_rows_csv(paths.main_csv), rows, result, log)
        atomic_write_text(paths.main_csv, rows.to_csv(index=False))
        sizes = set_sizes(grid.sets)
        pictures = _write_pictures(entries, grid, paths.figures / "data", device)  # the main models only
        record_stage(stage_times, "report", time.monotonic() - started, f"{len(rows)} rows", commit, did_work=True)
        moe = [e for e in entries if e.model is not None and e.model.has_routing_loss]
        offsets = _step_offsets(checkpoints, experiments, all_roles)
        manifest = {
            "profile": profile,
            "commit": commit,
            "command": command,
            "machine": machine(),  # where this run's report stage ran; REPORT.md names it, whoever re-renders
            "mode": result.mode,
            "rows_computed": result.rows_computed,
            "experiments": [
                {
                    **checkpoints[r.name].summary(),
                    "experiment": r.name,
                    "model": r.model,
                    "checkpoint": _relative(checkpoints[r.name].path, paths.results),
                }
                for r in all_roles
            ],
            "grid_lines": _grid_lines(grid, large, too_small, sizes, profile),
            "notes": _notes(profile, experiments),
            "set_sizes": sizes,
            "log_offsets": {r.model: offsets[r.name] for r in all_roles if experiments[r.name].init_from},
            "budget_steps": {r.model: offsets[r.name] + _steps(checkpoints[r.name]) for r in all_roles},
            "encoder_flops_per_lr_pixel": {e.name: encoder_flops_per_lr_pixel(e.model) for e in entries if e.model},
            "deepest_expert": {e.name: e.model.n_experts - 1 for e in moe},
            "experts": {e.name: _expert_info(e.model) for e in moe},
            "eval_check": eval_check,
            "recheck_file": RECHECK_CSV if result.recheck is not None else None,
            "figure_scale": FIGURE_SCALE,
            "pictures": pictures,
            "logs": {r.model: f"logs/{r.name}.csv" for r in all_roles},
            "validation": {r.model: experiments[r.name].data.validation_label() for r in all_roles},
        }
        if seeds:  # the training seed of every model with replicas and of its replicas (the Seeds table's labels)
            seeded = {r.experiment for r in SEED_ROLES}
            manifest["seeds"] = {
                r.model: experiments[r.name].train.seed for r in all_roles if r.evaluated and r.experiment in seeded
            }
        atomic_write_text(paths.results / RUN_FILE, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        log(f"[report] wrote {paths.main_csv}, {paths.results / RUN_FILE} and the pictures in {paths.figures}/data")
    result.timings = save_timings(paths.timings, timings, loaded)
    return result


MODEL_NAMES = ("bicubic", *(r.model for r in ROLES))
EVALUATED_MODELS = ("bicubic", *(r.model for r in ROLES if r.evaluated))  # the `model` values of the grid's rows
SEED_MODEL_NAMES = tuple(r.model for r in SEED_ROLES)  # with seeds: their rows at the scales up to ×4


def _selected_roles(
    models: Sequence[str] | None, experiments: dict[str, Experiment], roles: Sequence[Role] = ROLES
) -> tuple[list[Role], bool]:
    """(the roles to prepare: those of `models` and the experiments they start from, in `roles` order; whether
    bicubic is evaluated). None selects everything. UserError for an unknown or empty selection."""
    if models is None:
        return list(roles), True
    names = ("bicubic", *(r.model for r in roles))
    unknown = [m for m in models if m not in names]
    if unknown or not models:
        found = f"unknown model {unknown[0]!r}" if unknown else "no model selected"
        hint = " (seed replicas are left out with --no-seeds)" if unknown and unknown[0] in SEED_MODEL_NAMES else ""
        raise UserError(f"{found}{hint}; choose from {', '.join(names)}")
    needed = with_ancestors(experiments, {r.name for r in roles if r.model in models})
    return [r for r in roles if r.name in needed], "bicubic" in models


def with_ancestors(experiments: Mapping[str, Experiment], names) -> set[str]:
    """`names` and every experiment they start from, through the `init_from` chain (liif_converged → liif)."""
    out, todo = set(names), list(names)
    while todo:
        parent = experiments[todo.pop()].init_from
        if parent is not None and parent not in out:
            out.add(parent)
            todo.append(parent)
    return out


def knob_runs(grid: Grid, entries) -> list[tuple[Grid, list]]:
    """The knob rows the report needs beyond the grid's default, as (grid, entries) pairs:

    - MoEISR at all-deepest routing (knob −inf) at the grid's scales up to ×4: the decomposition of MoEISR's ΔPSNR
      into training deficit and routing cost (issue 20);
    - LMF's CMSR sweep (`CMSR_KNOBS`) at the scales above ×4, where CMSR acts.
    """
    from moeisr.models.lmf.cmsr import MAX_TRAINING_SCALE

    def subgrid(scales, knobs):
        return Grid(sets=list(grid.sets), scales=scales, knobs=knobs, limit=dict(grid.limit), protocol=grid.protocol)

    low = [s for s in grid.scales if s <= MAX_TRAINING_SCALE]
    high = [s for s in grid.scales if s > MAX_TRAINING_SCALE]
    moe = [e for e in entries if e.model is not None and e.model.has_routing_loss]
    lmf = [e for e in entries if e.model is not None and compute_knob(e.model) == "cmsr_mse"]
    runs = []
    if low and moe:
        runs.append((subgrid(low, [ALL_DEEPEST]), moe))
    if high and lmf:
        runs.append((subgrid(high, [None, *CMSR_KNOBS]), lmf))
    return runs


def _steps(info: CheckpointInfo) -> int:
    """The training steps of a bundled checkpoint (recorded; the planned max_steps for an old bundle without)."""
    steps = info.meta.get("steps")
    return int(steps) if steps is not None else int(info.experiment.optim.max_steps)


def _step_offsets(
    checkpoints: dict[str, CheckpointInfo], experiments: dict[str, Experiment], roles: Sequence[Role] = ROLES
) -> dict[str, int]:
    """Per role name: the training steps of the chain it starts from (0 for a model trained from scratch), so that
    step offset + own steps is its whole training budget."""
    offsets: dict[str, int] = {}
    for role in roles:  # parents first
        parent = experiments[role.name].init_from
        offsets[role.name] = 0 if parent is None else offsets[parent] + _steps(checkpoints[parent])
    return offsets


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _notes(profile: str, experiments: dict[str, Experiment]) -> list[str]:
    if profile == "smoke":
        return [
            "**Smoke profile**: tiny models trained for a few steps. These numbers test the pipeline end to end "
            "and measure nothing about the methods."
        ]
    if profile == "cpu":
        liif = experiments["liif"].spec
        encoder = liif.model.args["encoder_spec"]["args"]
        widths = sorted(set(liif.model.args["imnet_spec"]["args"]["hidden_list"]))
        return [
            f"**cpu profile**: shrunk encoders ({encoder['n_resblocks']} residual blocks, {encoder['n_feats']} "
            f"channels; the decoders keep the papers' widths, {', '.join(map(str, widths))}) trained on "
            f"{', '.join(liif.data.train_sets)} for what 2 CPU cores can do in hours; far from the paper's DIV2K "
            "budget, so compare rows with each other, not with published numbers."
        ]
    return []


def _grid_lines(grid: Grid, large: Grid | None, too_small: list[str], sizes: dict, profile: str) -> list[str]:
    sets = ", ".join(dataset_label(s, grid.limit.get(s, sizes[s]), sizes[s]) for s in grid.sets)
    knobs = ", ".join("default" if k is None else str(k) for k in grid.knobs)
    lines = [
        f"Grid: {sets}; scales {', '.join(f'×{s:g}' for s in grid.scales)}; routing knobs: {knobs}.",
        "Protocol: MATLAB-bicubic LR (LIIF's crop rule for non-integer scales), PSNR/SSIM on Y with shave = scale, "
        "LPIPS(alex) on RGB; FLOPs: fvcore traces `upscale`, which then takes the as-published decoder path (every "
        "output pixel and ensemble shift through its MLP; docs/flops.md); untraced inference, which the seconds "
        "time, takes the numerically equivalent as-executed path.",
    ]
    if large is not None:
        scales = ", ".join(f"×{s:g}" for s in large.scales)
        lines.append(
            f"Large scales {scales} on {', '.join(large.sets)} (every evaluated image keeps an LR side ≥ "
            f"{MIN_LR_SIDE} px); not on {', '.join(too_small) or '–'}."
        )
    elif LARGE_SCALES.get(profile):
        largest = max(LARGE_SCALES[profile])
        lines.append(f"Large scales skipped: no set keeps an LR side ≥ {MIN_LR_SIDE} px at ×{largest:g}.")
    else:
        lines.append("×18–×30 are not evaluated in this profile (each adds a full-image decode per model and image).")
    return lines


def _eval_stage_check(committed, rows: pd.DataFrame, result: ReproduceResult, log) -> dict:
    """The rows the eval stage computed in this run against the previous main.csv: {"reason": why not checked, or
    None; "computed": how many; "rows": per-model `recheck.reproduction_check` records}."""
    keys = result.computed_keys
    computed = rows[[key_of(r) in keys for r in rows.to_dict("records")]] if keys else rows.iloc[:0]
    if committed is None or computed.empty:
        reason = "no previous main.csv" if committed is None else "0 rows recomputed by the eval stage"
        log(f"[report] comparison with the previous main.csv: not checked ({reason})")
        return {"reason": reason, "computed": len(computed), "rows": []}
    check = recheck.reproduction_check(committed, computed)
    result.check = check
    for _, r in check.iterrows():
        dpsnr, dgflops = (f"{v:.4f}" if v == v else "–" for v in (r["max_abs_dpsnr"], r["max_abs_dgflops"]))
        log(
            f"[report] {r['model']}: {int(r['compared'])} rows computed now compared with the previous main.csv, "
            f"max |ΔPSNR| {dpsnr} dB, max |ΔGFLOPs| {dgflops}"
        )
    return {"reason": None, "computed": len(computed), "rows": json.loads(check.to_json(orient="records"))}


def _write_pictures(entries, grid: Grid, folder: Path, device: str) -> dict:
    """Decode the pictures the report shows (expert maps of the first image of every set, qualitative crops of the
    last set's first image) and write them into `folder` (`moeisr.evaluate.pictures`); returns their index files
    relative to the results folder."""
    by_name = {e.name: e.model for e in entries}
    moe_models = {e.name: e.model for e in entries if e.model is not None and e.model.has_routing_loss}
    samples = []
    for dataset in grid.sets:
        path = list_images(dataset, limit=1)[0]
        samples.append(
            pictures.expert_map_sample(f"{dataset}/{path.stem}", load_image(path), FIGURE_SCALE, moe_models, device)
        )
    models = {"bicubic": None} | {label: by_name[name] for label, name in crop_models(by_name).items()}
    image = list_images(grid.sets[-1], limit=1)[0]
    crops = pictures.qualitative_crops(
        f"{grid.sets[-1]}/{image.stem}", load_image(image), FIGURE_SCALE, models, device=device
    )
    results = folder.parent.parent
    maps_index, crops_index = pictures.write_expert_maps(samples, folder), pictures.write_crops(crops, folder)
    return {"expert_maps": str(maps_index.relative_to(results)), "crops": str(crops_index.relative_to(results))}


# The qualitative crops' models, label → model: recipe v2's pair of a backbone when both were evaluated, else v1's.
CROP_MODELS = (
    ({"LIIF": "liif-converged", "MoEISR-LIIF": "moeisr-liif-v2"}, {"LIIF": "liif", "MoEISR-LIIF": "moeisr-liif"}),
    ({"LTE": "lte-converged", "MoEISR-LTE": "moeisr-lte-v2"}, {"LTE": "lte", "MoEISR-LTE": "moeisr-lte"}),
)


def crop_models(available: Collection[str]) -> dict[str, str]:
    """Label → model of the qualitative crops: per backbone, the first pair of `CROP_MODELS` whose models are all in
    `available` (none for a backbone without one)."""
    chosen: dict[str, str] = {}
    for variants in CROP_MODELS:
        chosen |= next((pair for pair in variants if set(pair.values()) <= set(available)), {})
    return chosen


def _expert_info(model) -> list[list]:
    """[(label, relative cost)] per expert of a MoEISR model, cheapest first: e.g. ('3×256 (blue)', 0.81)."""
    from moeisr.models.moe.colors import COLOR_NAMES

    costs = model.experts.relative_costs().tolist()
    out = []
    for j, (hidden, cost) in enumerate(zip(model.experts.hidden_lists, costs, strict=True)):
        widths = sorted(set(hidden))
        shape = f"{len(hidden)}×{widths[0]}" if len(widths) == 1 else "[" + ", ".join(map(str, hidden)) + "]"
        color = COLOR_NAMES[j] if j < len(COLOR_NAMES) else f"colour {j}"
        out.append([f"{shape} ({color})", float(cost)])
    return out
