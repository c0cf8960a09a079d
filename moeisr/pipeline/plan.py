"""`moeisr reproduce --plan`: what the train and eval stages would still compute, and about how long; runs nothing.

- **Training left**, per experiment of the selected roles: its planned steps minus the steps done (a reusable bundle
  counts as all of them, a run folder of the same config hash as its newest checkpoint's step, `steps_done`). Its
  time is the steps left at a pace taken from, in order: the run folder's own log (seconds per step at its last
  logged step), the recorded training of bundled experiments of the same kind (timings.json: seconds over steps of
  the run that made each bundle), else the planning constant `STEP_SECONDS` of the ablations.
- **Evaluation left**, per model: the eval stage's cache keys (grid, large scales, knob rows, seed replicas) that the
  cache lacks. A model without a reusable bundle has all its rows left. Their time is their HR megapixels at the
  seconds per megapixel recorded in the cache for rows of the same kind and knob, else of the same kind, else of every
  row, else the planning constants.

A model's *kind* is its model name, with a MoEISR backbone's name (`liif`, `moeisr/lte`, ...), so a shallower dense
decoder takes its backbone's pace: an upper bound. Recorded seconds are as they were measured, at the threads and
load of whatever ran them; the estimate is a guide for scheduling, not a speed measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from moeisr.data.benchmark import list_images
from moeisr.data.images import image_size
from moeisr.evaluate.cache import ResultsCache, knob_label
from moeisr.evaluate.runner import ModelEntry, bicubic_entry, checkpoint_entry, grid_items, item_key
from moeisr.pipeline.ablations import DECODE_MP_PER_S, METRICS_S_PER_MP, STEP_SECONDS
from moeisr.pipeline.bundle import bundle_status, steps_done
from moeisr.pipeline.reproduce import Setup
from moeisr.pipeline.timings import load_timings
from moeisr.train.state import LOG_FILE

COLUMNS = ("model", "experiment", "steps", "steps_left", "train_hours", "train_pace", "rows", "rows_left", "eval_hours")


@dataclass(frozen=True)
class Plan:
    """The plan of one run: a row per selected experiment (`COLUMNS`; an experiment reproduced only as a parent has
    no rows, bicubic no steps) and the sources of the paces used."""

    frame: pd.DataFrame

    @property
    def train_hours(self) -> float:
        return float(self.frame["train_hours"].sum())

    @property
    def eval_hours(self) -> float:
        return float(self.frame["eval_hours"].sum())


def make_plan(job: Setup) -> Plan:
    """The plan of `job` (`moeisr.pipeline.reproduce.setup`), read from its bundles, run folders, timings.json and
    evaluation cache."""
    from moeisr.train.loop import build_model

    paths, experiments = job.paths, job.experiments
    kinds = {r.model: experiments[r.name].kind for r in job.all_roles} | {"bicubic": "bicubic"}
    timings = load_timings(paths.timings).get("experiments", {})
    cache = ResultsCache(paths.cache_file)

    rows, entries, replicas = [], [], []
    if job.with_bicubic:
        entries.append(bicubic_entry())
        rows.append({"model": "bicubic", "experiment": "", "steps": 0, "steps_left": 0, "train_pace": ""})
    for role in job.roles:
        experiment = experiments[role.name]
        done = steps_done(role.name, experiment, paths, job.profile)
        pace, source = _step_pace(role.name, experiment, paths, job.profile, timings, kinds, job)
        left = experiment.optim.max_steps - done
        rows.append({
            "model": role.model if role.evaluated else "",
            "experiment": role.name,
            "steps": experiment.optim.max_steps,
            "steps_left": left,
            "train_hours": left * pace / 3600,
            "train_pace": f"{pace:.2f} s/step ({source})" if left else "",
        })  # fmt: skip
        if not role.evaluated:
            continue
        bundle = paths.bundle / f"{role.name}.pt"
        if bundle_status(bundle, experiment)[0]:
            entry = checkpoint_entry(bundle, name=role.model)
        else:  # not trained yet: every row is left (no checkpoint hash can be in the cache)
            entry = ModelEntry(name=role.model, model=build_model(experiment).eval(), ckpt_hash="(not trained)")
        (entries if role.seed is None else replicas).append(entry)

    sizes = _megapixels(job)
    left: dict[str, list] = {}
    counts: dict[str, int] = {}
    present = cache.keys()
    for grid, on in job.eval_runs(entries, replicas):
        for item in grid_items(on, grid):
            entry, dataset, path, _, knob = item
            counts[entry.name] = counts.get(entry.name, 0) + 1
            if item_key(item, grid) in present:
                continue
            left.setdefault(entry.name, []).append((knob_label(knob), sizes[(dataset, path.stem)]))

    paces = _row_paces(cache, kinds, job, sizes)
    for row in rows:
        model = row["model"]
        todo = left.get(model, [])
        row["rows"], row["rows_left"] = counts.get(model, 0), len(todo)
        row["eval_hours"] = sum(mp * _row_pace(paces, kinds.get(model, ""), knob) for knob, mp in todo) / 3600
    frame = pd.DataFrame(rows).reindex(columns=list(COLUMNS))
    return Plan(frame.fillna({"train_hours": 0.0, "train_pace": ""}))


def _step_pace(name, experiment, paths, profile, timings, kinds, job) -> tuple[float, str]:
    """(seconds per training step, where that pace comes from): module docstring."""
    log = paths.run_dir(profile, name) / LOG_FILE
    if log.is_file():
        try:
            last = pd.read_csv(log).dropna(subset=["seconds"]).iloc[-1]
        except (IndexError, KeyError, pd.errors.EmptyDataError):
            last = None
        if last is not None and last["step"] > 0:
            return float(last["seconds"]) / float(last["step"]), "its run's log"
    own = experiment.kind
    recorded = []
    for role in job.all_roles:
        info = timings.get(role.name) or {}
        current = info.get("config_hash") == job.experiments[role.name].config_hash
        if kinds.get(role.model) == own and current and info.get("train_seconds"):
            steps = job.experiments[role.name].optim.max_steps  # the bundle's own run, without its parents' steps
            recorded.append(info["train_seconds"] / steps)
    if recorded:
        return float(pd.Series(recorded).median()), f"recorded for {len(recorded)} bundled {own} experiment(s)"
    return STEP_SECONDS.get(experiment.family, max(STEP_SECONDS.values())), "planning constant"


def _megapixels(job: Setup) -> dict[tuple[str, str], float]:
    """(set, image stem) -> HR megapixels, for every image of the grid's sets."""
    return {(s, p.stem): math.prod(image_size(p)) / 1e6 for s in job.grid.sets for p in list_images(s)}


def _row_paces(cache: ResultsCache, kinds: dict[str, str], job: Setup, mp: dict[tuple[str, str], float]) -> dict:
    """Recorded seconds per HR megapixel of the cache's rows on the grid's sets: by (kind, knob), by kind, and '*'."""
    frame = cache.load()
    if frame.empty:
        return {}
    frame = frame[frame["dataset"].isin(job.grid.sets) & frame["model"].isin(kinds)].copy()
    frame = frame[frame["seconds"].apply(lambda v: v is not None and not math.isnan(float(v)))]
    if frame.empty:
        return {}
    frame["mp"] = [mp.get((d, i), math.nan) for d, i in zip(frame["dataset"], frame["image"], strict=True)]
    frame = frame.dropna(subset=["mp"])
    frame["kind"] = frame["model"].map(kinds)
    out: dict = {"*": frame["seconds"].sum() / frame["mp"].sum()}
    for k, group in frame.groupby("kind"):
        out[k] = group["seconds"].sum() / group["mp"].sum()
    for (k, knob), group in frame.groupby(["kind", "knob"]):
        out[(k, knob)] = group["seconds"].sum() / group["mp"].sum()
    return out


def _row_pace(paces: dict, model_kind: str, knob: str) -> float:
    for key in ((model_kind, knob), model_kind, "*"):
        if key in paces:
            return float(paces[key])
    return 1 / DECODE_MP_PER_S + METRICS_S_PER_MP


def _hours(hours: float) -> str:
    return "–" if hours == 0 else f"{hours * 60:.0f} min" if hours < 1 else f"{hours:.1f} h"


def plan_text(plan: Plan, cores: int = 2) -> str:
    """The plan as a table and a total line. cores: how many one-thread jobs could run side by side."""
    frame = plan.frame.copy()
    frame["training left"] = [
        f"{r.steps_left} of {r.steps} steps, {_hours(r.train_hours)}" if r.steps_left else "done" if r.steps else "–"
        for r in frame.itertuples()
    ]
    frame["pace"] = frame["train_pace"]
    frame["evaluation left"] = [
        f"{r.rows_left} of {r.rows} rows, {_hours(r.eval_hours)}" if r.rows_left else "done" if r.rows else "–"
        for r in frame.itertuples()
    ]
    shown = frame[["model", "experiment", "training left", "pace", "evaluation left"]]
    total = plan.train_hours + plan.eval_hours
    lines = [
        shown.to_markdown(index=False),
        "",
        f"Left: training {_hours(plan.train_hours)}, evaluation {_hours(plan.eval_hours)}, "
        f"{_hours(total)} in all as one job; about {_hours(total / cores)} as {cores} one-thread jobs side by side "
        "(`--models`) if the work splits evenly. Paces are recorded ones (see `moeisr.pipeline.plan`): a guide, "
        "not a measurement.",
    ]
    return "\n".join(lines)
