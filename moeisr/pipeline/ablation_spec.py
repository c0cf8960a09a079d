"""The ablation suite files (`experiments/ablations/ablations.yaml`, `recipe.yaml`): factors, rows and per-profile
settings, and for a suite that chooses a recipe its `selection` rule's parameters.

A row is `{name, base, factor, set, note}`: the main experiment `base` (a file of `experiments/`) with the dotted
overrides `set`, all of them keys of `factor`. A row without a factor is its base's *reference*. A row with
`dense_for: <base>` is the dense equal-budget target of that MoEISR base's rows: a reference of its own base (a dense
experiment such as `liif_equal`) that `check_dense` holds to the same starting checkpoint and the same budget as the
MoEISR base's reference. Merge order of a row's spec (`row_experiment`), lowest first:

    base spec under the profile < CLI --set overrides < profiles.<p>.budget < the row's `set`

`load_suite` checks the file's shape (unknown keys are refused with the nearest valid spelling), `row_experiment`
merges a row through `moeisr.config.load_experiment` (schema-checked keys) and `check_row` checks that it differs
from its reference in its factor's keys and nowhere else. `check_dense` checks a dense row against its MoEISR
reference and `check_heldout` a selecting suite's held-out split (never a benchmark or training set).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moeisr.config import Experiment, load_experiment, read_yaml, spec_to_dict, with_loaded_parent
from moeisr.errors import UserError

SUITE_FILE = Path("ablations") / "ablations.yaml"  # relative to the experiments folder
SHOW_KINDS = ("value", "n_experts", "expert_family")
ROW_KEYS = ("name", "base", "factor", "set", "note", "dense_for")
FACTOR_KEYS = ("label", "keys", "show")
PROFILE_KEYS = ("rows", "budget", "grid", "sweep")
GRID_KEYS = ("sets", "scales", "limit")
SWEEP_KEYS = ("models", "points", "oracle_levels", "random_seeds")
TOP_KEYS = ("factors", "rows", "profiles", "selection", "parents")
# The selection rule's parameters (docs/moeisr.md, "Recipe v2: how it is chosen"; moeisr/report/ablations/recipe.py)
SELECTION_KEYS = ("min_gain_db", "min_saved_pct", "tolerance_db", "combined_factor")
BUDGET_SECTIONS = ("optim.", "train.", "data.")
NOT_COMPARED = ("name", "description")  # spec keys a row may differ in without changing the model or training


@dataclass(frozen=True)
class Factor:
    """A factor rows may change: its dotted spec `keys` and how a row's value is shown (`show`, see SHOW_KINDS)."""

    name: str
    label: str
    keys: tuple[str, ...]
    show: str = "value"


@dataclass(frozen=True)
class Row:
    """One ablation row: `base` with the overrides `set`; `factor` None marks the base's reference row."""

    name: str
    base: str
    factor: str | None = None
    set: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""
    dense_for: str | None = None  # the MoEISR base this dense row is the equal-budget target of

    @property
    def is_reference(self) -> bool:
        return self.factor is None

    @property
    def is_dense(self) -> bool:
        return self.dense_for is not None

    def overrides(self) -> list[str]:
        """The row's `set` as CLI-style `key=value` strings (values as JSON, which YAML reads back unchanged)."""
        return [f"{key}={json.dumps(value)}" for key, value in self.set.items()]


@dataclass(frozen=True)
class SweepSpec:
    """The routing sweep on the main MoEISR checkpoints: `points` routing budgets from all-cheapest to all-deepest
    (>= 7, the extremes included), the oracle's ε in 8-bit levels of the luma difference (ε = level / 255) and the
    seeds of the random router."""

    models: tuple[str, ...]
    points: int = 9
    oracle_levels: tuple[float, ...] = (0.0, 1.0)
    random_seeds: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class ProfileSpec:
    """What a profile runs: the rows (None = all), the budget overrides every row gets, the grid and the sweep."""

    name: str
    rows: tuple[str, ...] | None
    budget: Mapping[str, Any]
    sets: tuple[str, ...]
    scales: tuple[float, ...]
    limit: int | dict[str, int] | None
    sweep: SweepSpec

    def budget_overrides(self) -> list[str]:
        return [f"{key}={json.dumps(value)}" for key, value in self.budget.items()]

    def limit_for(self, dataset: str) -> int | None:
        return self.limit.get(dataset) if isinstance(self.limit, dict) else self.limit


@dataclass(frozen=True)
class Selection:
    """The selection rule's parameters (docs/moeisr.md, "Recipe v2: how it is chosen"): a knob row passes if its
    held-out FLOPs saved against the dense target are >= `min_saved_pct` and its held-out PSNR beats the reference's
    by >= `min_gain_db` (or, when the reference itself misses that floor, loses <= `tolerance_db`); rows of
    `combined_factor` (if any) are the kept values trained together, which confirm or refuse the combination."""

    min_gain_db: float
    min_saved_pct: float
    tolerance_db: float
    combined_factor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SELECTION_KEYS}


@dataclass(frozen=True)
class Suite:
    path: Path
    factors: dict[str, Factor]
    rows: tuple[Row, ...]
    profiles: dict[str, Mapping]
    selection: Selection | None = None
    # {experiment a base starts from: the one its rows start from instead}, e.g. {liif: liif_converged}
    parents: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The file's stem: 'ablations', 'recipe'."""
        return self.path.stem

    def row(self, name: str) -> Row:
        for row in self.rows:
            if row.name == name:
                return row
        raise UserError(f"{self.path}: no row {name!r}{hint(name, [r.name for r in self.rows])}")

    def reference_of(self, row: Row) -> Row:
        """The reference row of `row`'s base (the row itself for a reference)."""
        return self.base_reference(row.base)

    def base_reference(self, base: str) -> Row:
        """The reference row of `base`."""
        return next(r for r in self.rows if r.is_reference and r.base == base)

    def dense_target(self, base: str) -> Row | None:
        """The dense equal-budget row of MoEISR base `base` (`dense_for: base`), None if the suite has none."""
        return next((r for r in self.rows if r.dense_for == base), None)

    def profile(self, name: str) -> ProfileSpec:
        if name not in self.profiles:
            raise UserError(f"{self.path}: no profile {name!r}{hint(name, list(self.profiles))}")
        return _profile(self, name, self.profiles[name])

    def select(self, profile: ProfileSpec, names: Sequence[str] | None = None) -> list[Row]:
        """The rows to run: `names` (any rows of the file) or the profile's rows, each with its reference and its
        base's dense target (if the suite has one), in file order (references first within a base, so that tables can
        compare as soon as rows exist)."""
        wanted = list(names) if names else list(profile.rows or [r.name for r in self.rows])
        chosen = {self.row(n).name for n in wanted}
        chosen |= {self.reference_of(self.row(n)).name for n in wanted}
        chosen |= {d.name for n in wanted if (d := self.dense_target(self.row(n).base)) is not None}
        return sorted(
            (r for r in self.rows if r.name in chosen), key=lambda r: (self._base_rank(r.base), not r.is_reference)
        )

    def _base_rank(self, base: str) -> int:
        return [r.base for r in self.rows].index(base)


def hint(word: str, choices: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the nearest choice, else ' (known: a, b)'."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(map(str, choices)) or 'none'})"


def _check_keys(data: Any, allowed: Sequence[str], where: str) -> Mapping:
    if not isinstance(data, Mapping):
        raise UserError(f"{where} must be a mapping, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise UserError(f"{where}: unknown key {key!r}{hint(key, allowed)}")
    return data


def load_suite(path: str | Path) -> Suite:
    """Read and check the suite file's shape (the merged specs are checked by `row_experiment` and `check_row`).

    Raises one-line UserErrors naming the file, the row or profile, and the nearest valid key."""
    path = Path(path)
    doc = read_yaml(path)
    _check_keys(doc, TOP_KEYS, str(path))
    factors = {}
    for name, item in (doc.get("factors") or {}).items():
        item = _check_keys(item, FACTOR_KEYS, f"{path}: factor {name!r}")
        keys = item.get("keys")
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise UserError(f"{path}: factor {name!r}: 'keys' must be a non-empty list of dotted spec keys")
        show = item.get("show", "value")
        if show not in SHOW_KINDS:
            raise UserError(f"{path}: factor {name!r}: show {show!r} is not one of {', '.join(SHOW_KINDS)}")
        factors[str(name)] = Factor(str(name), str(item.get("label", name)), tuple(keys), show)
    rows: list[Row] = []
    for i, item in enumerate(doc.get("rows") or []):
        where = f"{path}: rows[{i}]"
        item = _check_keys(item, ROW_KEYS, where)
        for required in ("name", "base"):
            if not isinstance(item.get(required), str):
                raise UserError(f"{where}: '{required}' is required (a string)")
        where = f"{path}: row {item['name']!r}"
        factor = item.get("factor")
        if factor is not None and factor not in factors:
            raise UserError(f"{where}: unknown factor {factor!r}{hint(factor, list(factors))}")
        dense_for = item.get("dense_for")
        if dense_for is not None and (not isinstance(dense_for, str) or factor is not None):
            raise UserError(f"{where}: 'dense_for' names a MoEISR base (a string) and its row has no factor")
        changes = item.get("set") or {}
        if not isinstance(changes, Mapping):
            raise UserError(f"{where}: 'set' must be a mapping of dotted spec keys to values")
        if factor is None and changes:
            raise UserError(f"{where}: a reference row (no factor) must not set anything; give it a factor")
        if factor is not None and not changes:
            raise UserError(f"{where}: a factor row must change something under 'set'")
        if item["name"] in {r.name for r in rows}:
            raise UserError(f"{where}: duplicate row name")
        rows.append(Row(item["name"], item["base"], factor, _flatten(changes), str(item.get("note", "")), dense_for))
    if not rows:
        raise UserError(f"{path}: no rows")
    _check_dense_rows(path, rows)
    for row in rows:
        refs = [r for r in rows if r.is_reference and r.base == row.base]
        if len(refs) != 1:
            what = "no" if not refs else "more than one"
            raise UserError(f"{path}: base {row.base!r} has {what} reference row (a row without 'factor')")
        if not row.is_reference:
            factor = factors[row.factor]
            outside = [k for k in row.set if not any(_within(k, key) for key in factor.keys)]
            if outside:
                raise UserError(
                    f"{path}: row {row.name!r}: {outside[0]!r} is not a key of factor {row.factor!r} "
                    f"({', '.join(factor.keys)})"
                )
    profiles = doc.get("profiles") or {}
    if not isinstance(profiles, Mapping):
        raise UserError(f"{path}: 'profiles' must map profile names to settings")
    selection = _selection(path, doc.get("selection"), factors)
    parents = doc.get("parents") or {}
    if not isinstance(parents, Mapping) or not all(isinstance(k, str) and isinstance(v, str) and k != v
                                                   for k, v in parents.items()):  # fmt: skip
        raise UserError(f"{path}: 'parents' must map an experiment name to another, e.g. {{liif: liif_converged}}")
    profiles = {str(k): v or {} for k, v in profiles.items()}
    suite = Suite(path, factors, tuple(rows), profiles, selection, dict(parents))
    for name in suite.profiles:
        suite.profile(name)  # shape check of every profile now, not when it is first used
    return suite


def _check_dense_rows(path: Path, rows: Sequence[Row]) -> None:
    """A dense row's `dense_for` names a base with rows of its own (not the dense row's), at most one dense row per
    base, and a dense row is the only row of its own base (a dense model has no factor to vary here)."""
    for row in (r for r in rows if r.is_dense):
        where = f"{path}: row {row.name!r}"
        bases = [r.base for r in rows if not r.is_dense]
        if row.dense_for not in bases:
            raise UserError(
                f"{where}: dense_for {row.dense_for!r} is not the base of a row{hint(row.dense_for, bases)}"
            )
        if row.dense_for == row.base:
            raise UserError(f"{where}: dense_for names its own base {row.base!r}")
        if sum(r.dense_for == row.dense_for for r in rows) > 1:
            raise UserError(f"{where}: base {row.dense_for!r} has more than one dense row")
        if any(r.base == row.base and r is not row for r in rows):
            raise UserError(f"{where}: a dense row must be the only row of its base {row.base!r}")


def _selection(path: Path, data: Any, factors: Mapping[str, Factor]) -> Selection | None:
    if data is None:
        return None
    data = _check_keys(data, SELECTION_KEYS, f"{path}: selection")
    values = {}
    for key in ("min_gain_db", "min_saved_pct", "tolerance_db"):
        value = data.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise UserError(f"{path}: selection.{key} must be a number >= 0, got {value!r}")
        values[key] = float(value)
    if values["min_saved_pct"] >= 100:
        raise UserError(f"{path}: selection.min_saved_pct must be below 100, got {values['min_saved_pct']:g}")
    combined = data.get("combined_factor")
    if combined is not None and combined not in factors:
        raise UserError(
            f"{path}: selection.combined_factor: unknown factor {combined!r}{hint(combined, list(factors))}"
        )
    return Selection(**values, combined_factor=combined)


def _flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    """{'optim': {'lr': 1}} or {'optim.lr': 1} -> {'optim.lr': 1} (lists are leaves)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def _within(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _profile(suite: Suite, name: str, data: Mapping) -> ProfileSpec:
    where = f"{suite.path}: profiles.{name}"
    data = _check_keys(data, PROFILE_KEYS, where)
    rows = data.get("rows")
    if rows is not None:
        if not isinstance(rows, list):
            raise UserError(f"{where}.rows must be a list of row names (or null for every row)")
        for row in rows:
            suite.row(row)
    budget = data.get("budget") or {}
    if not isinstance(budget, Mapping):
        raise UserError(f"{where}.budget must be a mapping of dotted spec keys to values")
    budget = _flatten(budget)
    if "optim.max_steps" not in budget:
        raise UserError(f"{where}.budget must set optim.max_steps: the fine-tuning steps of every row")
    # the budget is how long and how often, never what is trained: a model or loss key would act like a factor
    foreign = [k for k in budget if not k.startswith(BUDGET_SECTIONS)]
    if foreign:
        allowed = ", ".join(BUDGET_SECTIONS)
        raise UserError(f"{where}.budget: {foreign[0]!r} is not a budget key (allowed under {allowed})")
    grid = _check_keys(data.get("grid") or {}, GRID_KEYS, f"{where}.grid")
    sets, scales = grid.get("sets"), grid.get("scales")
    if not isinstance(sets, list) or not sets or not isinstance(scales, list) or not scales:
        raise UserError(f"{where}.grid needs non-empty 'sets' and 'scales' lists")
    if not all(isinstance(s, (int, float)) and s >= 1 for s in scales):
        raise UserError(f"{where}.grid.scales must be numbers >= 1, got {scales}")
    sweep = _check_keys(data.get("sweep") or {}, SWEEP_KEYS, f"{where}.sweep")
    models = sweep.get("models") or []
    points = sweep.get("points", 9)
    if not isinstance(points, int) or points < 7:
        raise UserError(f"{where}.sweep.points must be an integer >= 7 (all-cheapest to all-deepest), got {points!r}")
    levels = tuple(float(v) for v in sweep.get("oracle_levels", (0.0, 1.0)))
    if not levels or any(v < 0 for v in levels):
        raise UserError(f"{where}.sweep.oracle_levels must be a non-empty list of levels >= 0")
    seeds = tuple(int(s) for s in sweep.get("random_seeds", (0,)))
    return ProfileSpec(
        name=name,
        rows=tuple(rows) if rows is not None else None,
        budget=dict(budget),
        sets=tuple(sets),
        scales=tuple(float(s) for s in scales),
        limit=grid.get("limit"),
        sweep=SweepSpec(tuple(models), points, levels, seeds),
    )


# ------------------------------------------------------------------------------------------- row specs


def row_experiment(
    suite: Suite,
    row: Row,
    profile: ProfileSpec,
    main: Mapping[str, Experiment],
    experiments_dir: Path,
    overrides: Sequence[str] = (),
) -> Experiment:
    """The row's merged, validated experiment (module docstring), named after the row, whose parent is the main
    job's loaded `init_from` experiment (so the chained config hash names the backbone checkpoint it starts from);
    a base starting from a key of the suite's `parents` starts from its value instead (an `init_from` layer last)."""
    layers = [*overrides, *profile.budget_overrides(), *row.overrides(), f"name={row.name}"]
    try:
        experiment = load_experiment(experiments_dir / f"{row.base}.yaml", profile.name, layers)
        if experiment.init_from in suite.parents:
            layers.append(f"init_from={json.dumps(suite.parents[experiment.init_from])}")
            experiment = load_experiment(experiments_dir / f"{row.base}.yaml", profile.name, layers)
    except UserError as exc:
        raise UserError(f"{suite.path}: row {row.name!r}: {exc}") from None
    return with_loaded_parent(
        experiment,
        main,
        f"{suite.path}: row {row.name!r}: its base starts from {experiment.init_from!r}, which is not one of "
        f"the main job's experiments ({', '.join(main)})",
    )


def flat_spec(experiment: Experiment) -> dict[str, Any]:
    """The spec as {dotted key: leaf value} (lists are leaves), without the keys in NOT_COMPARED."""
    out: dict[str, Any] = {}

    def walk(value, prefix):
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                walk(v, f"{prefix}.{k}" if prefix else str(k))
        else:
            out[prefix] = value

    data = spec_to_dict(experiment.spec)
    for key in NOT_COMPARED:
        data.pop(key, None)
    walk(data, "")
    return out


def spec_difference(a: Experiment, b: Experiment) -> list[str]:
    """The dotted keys whose values differ between two experiments' specs (NOT_COMPARED left out)."""
    fa, fb = flat_spec(a), flat_spec(b)
    return sorted(k for k in set(fa) | set(fb) if fa.get(k, _MISSING) != fb.get(k, _MISSING))


_MISSING = object()


def check_row(suite: Suite, row: Row, experiment: Experiment, reference: Experiment) -> None:
    """UserError unless `experiment` differs from `reference` somewhere, and only in the keys of the row's factor."""
    if row.is_reference:
        return
    factor = suite.factors[row.factor]
    changed = spec_difference(experiment, reference)
    if not changed:
        raise UserError(
            f"{suite.path}: row {row.name!r} equals its reference {suite.reference_of(row).name!r} under this "
            "profile; drop it (the reference row already covers that value)"
        )
    outside = [k for k in changed if not any(_within(k, key) for key in factor.keys)]
    if outside:
        raise UserError(
            f"{suite.path}: row {row.name!r} differs from its reference in {outside[0]!r}, outside its factor "
            f"{row.factor!r} ({', '.join(factor.keys)})"
        )


def check_dense(suite: Suite, row: Row, experiment: Experiment, reference: Experiment) -> None:
    """UserError unless the dense row `row` (`experiment`) is a dense model that starts from the same checkpoint as
    its MoEISR base's reference (`reference`) and trains for the same budget (optim, train and data sections equal),
    so that every row of that base has a dense target at its own budget."""
    where = f"{suite.path}: row {row.name!r} (dense_for {row.dense_for!r})"
    if experiment.model.name == "moeisr":
        raise UserError(f"{where}: its base {row.base!r} is a MoEISR experiment; the dense target must be dense")
    if experiment.init_from != reference.init_from:
        raise UserError(
            f"{where}: starts from {experiment.init_from!r}, its MoEISR reference from {reference.init_from!r}"
        )
    mine, theirs = flat_spec(experiment), flat_spec(reference)
    sections = ("optim.", "train.", "data.", "init_from")
    differ = sorted(
        k
        for k in set(mine) | set(theirs)
        if k.startswith(sections) and mine.get(k, _MISSING) != theirs.get(k, _MISSING)
    )
    if differ:
        raise UserError(
            f"{where}: its budget differs from {suite.base_reference(row.dense_for).name!r} in {differ[0]!r} "
            "(an equal-budget target trains exactly as long, on the same data, with the same schedule)"
        )


def check_heldout(suite: Suite, experiments: Mapping[str, Experiment], profile: ProfileSpec) -> dict[str, Any]:
    """For a suite with a `selection`: the held-out split every row validates on, as {set, scales, crop, limit}.

    UserError unless every row sets the same `data.val_*` (the budget's), the set is not one of the benchmark sets
    (they never choose a recipe), not one of the rows' training sets, and not on the profile's grid."""
    from moeisr.data.layout import BENCHMARK_SETS, canonical_set_name

    splits = {}
    for name, experiment in experiments.items():
        d = experiment.data
        splits[name] = (d.val_set, tuple(d.validation_scales()), d.val_crop, d.val_limit)
    first = next(iter(splits))
    other = next((name for name, split in splits.items() if split != splits[first]), None)
    if other is not None:
        raise UserError(
            f"{suite.path}: profiles.{profile.name}: rows {first!r} and {other!r} validate on different held-out "
            "splits; set data.val_* in the budget, never in a row"
        )
    val_set, scales, crop, limit = next(iter(splits.values()))
    where = f"{suite.path}: profiles.{profile.name}.budget: data.val_set"
    if val_set is None:
        raise UserError(f"{where} is null; a suite with a selection rule needs a held-out split (e.g. T91)")
    val_set = canonical_set_name(val_set)
    if val_set in BENCHMARK_SETS or val_set in {canonical_set_name(s) for s in profile.sets}:
        raise UserError(f"{where} {val_set!r} is a benchmark set; a recipe is never chosen on one")
    training = {canonical_set_name(s) for e in experiments.values() for s in e.data.train_sets}
    if val_set in training:
        raise UserError(f"{where} {val_set!r} is one of the rows' training sets; it cannot be held out")
    return {"set": val_set, "scales": list(scales), "crop": crop, "limit": limit}


def factor_value(factor: Factor, experiment: Experiment) -> str:
    """How `experiment` sets `factor`, for tables: the value at its first key, J, or the expert family."""
    spec = spec_to_dict(experiment.spec)
    value = _lookup(spec, factor.keys[0])
    if factor.show == "n_experts":
        return str(len(expert_hidden_lists(experiment)))
    if factor.show == "expert_family":
        from moeisr.models.moe.experts import FAMILIES

        if value is None or value in FAMILIES:
            return value or "depth"
        return "explicit: " + ", ".join("×".join(map(str, h)) for h in expert_hidden_lists(experiment))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def expert_hidden_lists(experiment: Experiment) -> list[list[int]]:
    """The resolved hidden lists of a MoEISR experiment's experts (unsorted, as configured)."""
    from moeisr.models.moe.experts import resolve_expert_hidden_lists

    args = experiment.model.args
    backbone = _lookup(args, "backbone_spec.args.imnet_spec.args.hidden_list") or []
    return resolve_expert_hidden_lists(args.get("experts"), backbone)


def _lookup(data, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data
