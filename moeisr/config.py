"""Experiment specs: YAML files checked against a small dataclass schema, with profiles and overrides.

An experiment file (e.g. `experiments/liif.yaml`) has the sections of `ExperimentSpec` plus an
optional `profiles:` mapping. `load_experiment(path, profile, overrides)` merges, lowest first:

1. the schema defaults below (the paper's settings),
2. `defaults:` of the shared `profiles.yaml` (found beside the experiment file or one folder up),
3. `profiles.<profile>:` of the shared `profiles.yaml`,
4. the experiment file's own sections,
5. the experiment file's `profiles.<profile>:`,
6. CLI-style overrides such as `optim.lr=1e-4`.

A file may name another with `extends: <experiment>`: that file's sections and its `profiles.<profile>:`
(its own `extends` first) come between 3 and 4, so a variant states only what it changes (its `name`
stays its own). `init_from` is different: it names the checkpoint the run starts from.

So the shared profiles are *defaults*: an experiment that fixes `optim.max_steps` in its base sections
keeps it under every profile. Keys that must change with the profile belong in the shared file or in the
experiment's own `profiles:` section. Mappings merge key by key; lists and scalars replace. Any mapping
key may be dotted (`optim.lr: 1e-4` == `optim: {lr: 1e-4}`). `Experiment.provenance` tells which layer
set each key.

Model `args` and `loss.args` are free-form here: the model constructor checks them.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import json
import math
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from moeisr.errors import UserError

PROFILES_FILE = "profiles.yaml"

# Excluded from `config_hash` because they cannot change the trained weights: the experiment's name and
# description, the evaluation grid, the checkpoint/validation/logging cadence, and the validation set
# (validation runs without gradients). Everything else (model, init_from, training data and its loader
# settings, optimiser, schedule, steps, seed, determinism, loss) is hashed.
HASH_EXCLUDED = (
    "name",
    "description",
    "eval",
    "train.ckpt_every",
    "train.val_every",
    "train.log_every",
    "data.val_set",
    "data.val_scale",
    "data.val_limit",
    "data.val_scales",
    "data.val_crop",
)

# Keys added after checkpoints were bundled: left out of the hash while they hold these defaults, so that a
# new knob at its default keeps every existing checkpoint's hash (and the bundles valid).
HASH_OMITTED_AT_DEFAULT = {
    "optim.schedule.cycle_steps": None,
    "train.stop_gain_db": None,
    "train.stop_check_every": 1_000,
    "init": {"experts": "random", "fit_patches": 64},
    "optim.lr_scale": {},
    "optim.freeze_encoder_steps": 0,
    "calibrate": {"images": 8, "downscale": 4},
}

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------- schema
# Defaults follow LIIF's DIV2K recipe (our reading of the paper and its configs): EDSR-style training
# with 48x48 LR patches, batch 16, 2304 sampled queries, Adam 1e-4 halved every 200 epochs for 1000
# epochs, where one epoch = 800 images x 20 repeats / 16 = 1000 steps.


@dataclass(frozen=True)
class ModelSpec:
    """A registry spec `{name, args}`; `args` is free-form (nested specs allowed)."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataSpec:
    """Training patches: HR crops of `round(inp_size * s)` px with s ~ U[scale_min, scale_max]."""

    train_sets: list[str] = field(default_factory=lambda: ["DIV2K_train"])
    inp_size: int = 48  # LR patch side, px
    scale_min: float = 1.0
    scale_max: float = 4.0
    sample_q: int | None = 2304  # HR pixels queried per patch; null = all of them
    augment: bool = True  # random flips and transposes
    batch_size: int = 16
    num_workers: int = 0
    val_set: str | None = None  # null = no validation during training
    val_scale: float = 4.0
    val_limit: int | None = None  # first N images of val_set; null = all
    # Several validation scales (the logged val_psnr is their mean); null = [val_scale].
    val_scales: list[float] | None = None
    # Side (HR px) of one fixed crop per validation image (position seeded by the file name); null = whole
    # images. Fixed crops make a large held-out set such as T91 affordable to validate on.
    val_crop: int | None = None

    def validation_scales(self) -> list[float]:
        """The scales validation runs at: `val_scales`, else `[val_scale]`."""
        return list(self.val_scales) if self.val_scales else [self.val_scale]

    def validation_label(self) -> str | None:
        """What validation reads, in words ('Set5 ×2', 'T91, 72 px crops, ×2, ×4'); None without validation."""
        if self.val_set is None:
            return None
        crops = f", {self.val_crop} px crops" if self.val_crop else ""
        first = f" (first {self.val_limit})" if self.val_limit else ""
        return f"{self.val_set}{first}{crops}, " + ", ".join(f"×{s:g}" for s in self.validation_scales())


@dataclass(frozen=True)
class ScheduleSpec:
    """`step`: lr * gamma at each milestone (in steps); `cosine`: lr -> min_lr over max_steps;
    `cosine_restarts`: the cosine over every `cycle_steps` after the warm-up, restarting at lr (SGDR)."""

    name: Literal["step", "cosine", "cosine_restarts", "constant"] = "step"
    milestones: list[int] = field(default_factory=lambda: [200_000, 400_000, 600_000, 800_000])
    gamma: float = 0.5
    min_lr: float = 0.0
    cycle_steps: int | None = None  # cosine_restarts only


@dataclass(frozen=True)
class OptimSpec:
    name: Literal["adam"] = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up from 0, before the schedule takes over
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    max_steps: int = 1_000_000
    grad_clip: float | None = None  # max global grad norm; null = no clipping
    # Learning-rate multipliers per module group (encoder, mapper, experts, other; `moeisr.train.schedules`),
    # e.g. {encoder: 0.1}; {} = one group at lr. The groups: encoder = the backbone's CNN, experts = the decoder
    # MLP(s), mapper = MoEISR's mapper, other = the rest (e.g. LTE's estimators).
    lr_scale: dict[str, float] = field(default_factory=dict)
    freeze_encoder_steps: int = 0  # the encoder group's lr is 0 for the first N steps (its Adam moments still update)


@dataclass(frozen=True)
class TrainSpec:
    seed: int = 0
    ckpt_every: int = 100_000  # steps
    val_every: int = 1_000
    log_every: int = 100
    deterministic: bool = False  # torch.use_deterministic_algorithms
    # Convergence stop: every `stop_check_every` steps after the warm-up (a validation runs there), stop when
    # the best validation PSNR so far gained less than `stop_gain_db` per 1000 steps over the previous
    # check's best (the first check compares with a validation of the starting weights). With
    # cosine_restarts, set it to the cycle length so that checks fall at the cycles' ends.
    # null = run to optim.max_steps.
    stop_gain_db: float | None = None
    stop_check_every: int = 1_000


@dataclass(frozen=True)
class LossSpec:
    """Weights of the training loss: `l1 * L1 + balance_weight * balance`; `tau` is the Gumbel temperature."""

    l1: float = 1.0
    balance_weight: float = 0.0  # 0 for plain LIIF/LTE
    tau: float = 1.0
    args: dict[str, Any] = field(default_factory=dict)  # model-specific extras, free-form


@dataclass(frozen=True)
class InitSpec:
    """How an `init_from` MoEISR starts besides the backbone copy (moeisr.models.moe.expert_init), or a dense model
    with a shallower decoder than its parent's (moeisr.models.prefix_init; docs/dense_baselines.md): `experts` is
    random | prefix | prefix_lstsq; prefix_lstsq fits on the decoder inputs of `fit_patches` training patches."""

    experts: Literal["random", "prefix", "prefix_lstsq"] = "random"
    fit_patches: int = 64


@dataclass(frozen=True)
class CalibrateSpec:
    """Post-training calibration when a run is bundled (moeisr.train.calibrate): LMF's CMSR table is measured on
    the first `images` images of the first training source, downscaled by `downscale` (MATLAB bicubic)."""

    images: int = 8
    downscale: int = 4


@dataclass(frozen=True)
class EvalSpec:
    """The evaluation grid: every (set, scale, knob), on the first `limit` images of each set."""

    sets: list[str] = field(default_factory=lambda: ["Set5", "Set14", "B100", "Urban100"])
    scales: list[float] = field(default_factory=lambda: [2.0, 3.0, 4.0, 6.0, 8.0, 12.0])
    limit: int | dict[str, int] | None = None  # one number for every set, or {set: n}; null = all
    knobs: list[float | str | None] = field(default_factory=lambda: [None])  # null = the model's default

    def limit_for(self, dataset: str) -> int | None:
        """How many images of `dataset` to evaluate (None = all)."""
        if isinstance(self.limit, dict):
            return self.limit.get(dataset)
        return self.limit


@dataclass(frozen=True)
class ExperimentSpec:
    model: ModelSpec
    name: str | None = None  # defaults to the file's stem
    description: str = ""
    init_from: str | None = None  # another experiment whose checkpoint initialises this one
    data: DataSpec = field(default_factory=DataSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    loss: LossSpec = field(default_factory=LossSpec)
    init: InitSpec = field(default_factory=InitSpec)
    calibrate: CalibrateSpec = field(default_factory=CalibrateSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)


# ---------------------------------------------------------------------------------- type checking


class _SpecError(Exception):
    """A problem at a dotted key; turned into a UserError once the key's source file is known."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return get_type_hints(cls)


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _describe(tp) -> str:
    simple = {Any: "anything", type(None): "null", bool: "true or false", int: "an integer", float: "a number"}
    if tp in simple:
        return simple[tp]
    if tp is str:
        return "a string"
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is list:
        return f"a list (each {_describe(args[0])})"
    if origin is tuple:
        return f"a list of {len(args)} values (each {_describe(args[0])})"
    if origin is dict:
        return f"a mapping (each value {_describe(args[1])})"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return str(tp)


def _mismatch(key: str, tp, value) -> _SpecError:
    return _SpecError(key, f"'{key}' must be {_describe(tp)}, got {value!r} ({type(value).__name__})")


def _coerce(tp, value, key: str):
    """Check `value` against type `tp`, returning a normalised copy (ints become floats where numbers are due)."""
    if tp is Any:
        return copy.deepcopy(value)
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        deepest = None
        for arm in args:
            try:
                return _coerce(arm, value, key)
            except _SpecError as exc:
                if exc.key != key and (deepest is None or len(exc.key) > len(deepest.key)):
                    deepest = exc  # the value had the right shape; report the inner problem
        raise deepest or _mismatch(key, tp, value)
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise _mismatch(key, tp, value)
    if tp is type(None):
        if value is None:
            return None
        raise _mismatch(key, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _mismatch(key, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # 1e6 written for a step count
            return int(value)
        raise _mismatch(key, tp, value)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # plain YAML 1.1 reads `1e-4` as a string
                return float(value)
            except ValueError:
                pass
        raise _mismatch(key, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _mismatch(key, tp, value)
    if origin in (list, tuple):
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise _mismatch(key, tp, value)
        if origin is tuple:
            if len(value) != len(args):
                raise _mismatch(key, tp, value)
            return tuple(_coerce(arm, v, f"{key}[{i}]") for i, (arm, v) in enumerate(zip(args, value, strict=True)))
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _mismatch(key, tp, value)
        return {str(k): _coerce(args[1], v, _join(key, k)) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    raise TypeError(f"unsupported schema type {tp!r} at {key}")


def _schema_paths(cls, prefix: str = "") -> list[str]:
    """Every dotted key the schema knows, sections included."""
    paths = []
    for f in dataclasses.fields(cls):
        path = _join(prefix, f.name)
        paths.append(path)
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            paths += _schema_paths(tp, path)
    return paths


def _unknown_key(cls, key: str, prefix: str) -> _SpecError:
    dotted = _join(prefix, key)
    siblings = [f.name for f in dataclasses.fields(cls)]
    # a sibling the key extends or shortens (lr_rate -> lr), else a near spelling
    close = [n for n in siblings if len(n) >= 2 and (key.startswith(n) or n.startswith(key))]
    close = close or difflib.get_close_matches(key, siblings, n=1, cutoff=0.6)
    if close:
        hint = f" (did you mean '{_join(prefix, close[0])}'?)"
    else:  # a key filed under the wrong section, e.g. optim.batch_size
        everywhere = _schema_paths(ExperimentSpec)
        by_leaf = {p.rsplit(".", 1)[-1]: p for p in everywhere}
        leaf = difflib.get_close_matches(key, by_leaf, n=1, cutoff=0.75)
        hint = f" (did you mean '{by_leaf[leaf[0]]}'?)" if leaf else f" (valid keys: {', '.join(siblings)})"
    return _SpecError(dotted, f"unknown key '{dotted}'{hint}")


def _check_keys(cls, data: Mapping, prefix: str = "") -> None:
    """Reject keys the schema does not know, recursing into sections (free-form mappings are skipped)."""
    if not isinstance(data, Mapping):
        raise _mismatch(prefix, cls, data)
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key not in names:
            raise _unknown_key(cls, str(key), prefix)
        tp = _hints(cls)[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            _check_keys(tp, value, _join(prefix, key))


def _build(cls, data, prefix: str):
    _check_keys(cls, data, prefix)
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        if f.name in data:
            kwargs[f.name] = _coerce(_hints(cls)[f.name], data[f.name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _SpecError(key, f"missing required key '{key}'")
    return cls(**kwargs)


def _check_values(spec: ExperimentSpec) -> None:
    """Range and consistency checks the types alone cannot express."""
    d, o, s, t, lo, ev = spec.data, spec.optim, spec.optim.schedule, spec.train, spec.loss, spec.eval
    # NaN compares False with everything and inf passes ">= 1": refuse both before the rules use them.
    finite = [
        ("data.scale_min", d.scale_min),
        ("data.scale_max", d.scale_max),
        ("data.val_scale", d.val_scale),
        ("optim.lr", o.lr),
        ("loss.tau", lo.tau),
        ("loss.balance_weight", lo.balance_weight),
        *(("eval.scales", x) for x in ev.scales),
    ]
    for key, value in finite:
        if not math.isfinite(value):
            raise _SpecError(key, f"'{key}' must be a finite number, got {value!r}")
    rules = [
        ("name", spec.name is None or _NAME_RE.match(spec.name), "a plain name (letters, digits, _ . -)"),
        ("init_from", spec.init_from is None or _NAME_RE.match(spec.init_from), "an experiment name"),
        ("data.train_sets", len(d.train_sets) > 0, "a non-empty list"),
        ("data.inp_size", d.inp_size > 0, "positive"),
        ("data.scale_min", d.scale_min >= 1, ">= 1"),
        ("data.scale_max", d.scale_max >= d.scale_min, ">= data.scale_min"),
        ("data.sample_q", d.sample_q is None or d.sample_q > 0, "positive or null"),
        (
            "data.sample_q",
            d.sample_q is None or d.sample_q <= round(d.inp_size * d.scale_min) ** 2,
            f"at most (inp_size * scale_min)^2 = {round(d.inp_size * d.scale_min) ** 2}, the pixels of the "
            "smallest HR patch",
        ),
        ("data.batch_size", d.batch_size > 0, "positive"),
        ("data.num_workers", d.num_workers >= 0, ">= 0"),
        ("data.val_scale", d.val_scale >= 1, ">= 1"),
        ("data.val_limit", d.val_limit is None or d.val_limit > 0, "positive or null"),
        ("data.val_scales", d.val_scales is None or all(x >= 1 for x in d.val_scales), "null or numbers >= 1"),
        ("data.val_crop", d.val_crop is None or d.val_crop > 0, "positive or null"),
        (
            "optim.schedule.cycle_steps",
            (s.name == "cosine_restarts") == (s.cycle_steps is not None) and (s.cycle_steps or 1) > 0,
            "a positive step count with schedule cosine_restarts (and only then)",
        ),
        ("train.stop_gain_db", t.stop_gain_db is None or t.stop_gain_db >= 0, ">= 0 or null"),
        ("train.stop_check_every", t.stop_check_every > 0, "positive"),
        ("init.fit_patches", spec.init.fit_patches > 0, "positive"),
        (
            "optim.lr_scale",
            set(o.lr_scale) <= {"encoder", "mapper", "experts", "other"} and all(v >= 0 for v in o.lr_scale.values()),
            "a mapping of encoder/mapper/experts/other to multipliers >= 0",
        ),
        ("optim.freeze_encoder_steps", 0 <= o.freeze_encoder_steps <= o.max_steps, "in [0, optim.max_steps]"),
        ("optim.lr", o.lr > 0, "positive"),
        ("optim.betas", all(0 <= b < 1 for b in o.betas), "two numbers in [0, 1)"),
        ("optim.weight_decay", o.weight_decay >= 0, ">= 0"),
        ("optim.max_steps", o.max_steps > 0, "positive"),
        ("optim.warmup_steps", 0 <= o.warmup_steps < o.max_steps, ">= 0 and below optim.max_steps"),
        ("optim.grad_clip", o.grad_clip is None or o.grad_clip > 0, "positive or null"),
        (
            "optim.schedule.milestones",
            all(a < b for a, b in zip([0, *s.milestones], s.milestones, strict=False)),
            "strictly increasing positive step counts",
        ),
        ("optim.schedule.gamma", 0 < s.gamma <= 1, "in (0, 1]"),
        ("optim.schedule.min_lr", 0 <= s.min_lr <= o.lr, "in [0, optim.lr]"),
        ("train.seed", t.seed >= 0, ">= 0"),
        ("train.ckpt_every", t.ckpt_every > 0, "positive"),
        ("train.val_every", t.val_every > 0, "positive"),
        ("train.log_every", t.log_every > 0, "positive"),
        ("loss.l1", lo.l1 >= 0, ">= 0"),
        ("loss.balance_weight", lo.balance_weight >= 0, ">= 0"),
        ("loss.tau", lo.tau > 0, "positive"),
        ("eval.sets", len(ev.sets) > 0, "a non-empty list"),
        ("eval.scales", len(ev.scales) > 0 and all(x >= 1 for x in ev.scales), "a non-empty list of numbers >= 1"),
        ("eval.knobs", len(ev.knobs) > 0, "a non-empty list (use [null] for the model's default)"),
        (
            "eval.limit",
            ev.limit is None or all(n > 0 for n in (ev.limit.values() if isinstance(ev.limit, dict) else [ev.limit])),
            "positive",
        ),
    ]
    for key, ok, expected in rules:
        if not ok:
            value = functools.reduce(getattr, key.split("."), spec)
            raise _SpecError(key, f"'{key}' must be {expected}, got {value!r}")


# ------------------------------------------------------------------------------------ YAML layers


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float (YAML 1.2) and rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_value(text: str) -> Any:
    """Parse one override value as YAML (`1e-4` -> 0.0001, `[2, 3]` -> list, `null` -> None, `abc` -> 'abc')."""
    return yaml.load(text, Loader=_SpecLoader) if text.strip() else None


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        doc = yaml.load(text, Loader=_SpecLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{path}: invalid YAML{where}: {problem}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top, got {type(doc).__name__}")
    return doc


def _expand_dotted(data):
    """`{'optim.lr': 1}` -> `{'optim': {'lr': 1}}`, recursively; later keys merge into earlier ones."""
    if not isinstance(data, Mapping):
        return data
    out: dict = {}
    for key, value in data.items():
        parts = str(key).split(".") if isinstance(key, str) else [key]
        nested = _expand_dotted(value)
        for part in reversed(parts[1:]):
            nested = {part: nested}
        out = deep_merge(out, {parts[0]: nested})
    return out


def deep_merge(base: Mapping, over: Mapping) -> dict:
    """A new dict: `over` on top of `base`; mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _leaves(data, prefix: str = "") -> list[str]:
    if isinstance(data, Mapping) and data:
        return [p for k, v in data.items() for p in _leaves(v, _join(prefix, str(k)))]
    return [prefix]


def parse_override(text: str) -> tuple[str, Any]:
    """`'optim.lr=1e-4'` -> `('optim.lr', 0.0001)`; the value is parsed as YAML."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"override {text!r} must look like key=value, e.g. optim.lr=1e-4")
    try:
        return key, parse_value(value)
    except yaml.YAMLError:
        raise UserError(f"override {text!r}: the value is not valid YAML") from None


# ------------------------------------------------------------------------------------ experiments


@dataclass(frozen=True)
class Experiment:
    """A merged, validated experiment: `spec` plus where it came from. Read-only."""

    name: str
    profile: str
    spec: ExperimentSpec
    path: Path | None = None
    parent: Experiment | None = None  # the loaded `init_from` experiment, same profile
    provenance: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def model(self) -> ModelSpec:
        return self.spec.model

    @property
    def kind(self) -> str:
        """'liif', 'lte', 'moeisr/liif', ...: the model's name, with its backbone's for a model built over one."""
        name, backbone = self.model.name, (self.model.args or {}).get("backbone_spec")
        return f"{name}/{backbone['name']}" if isinstance(backbone, dict) and "name" in backbone else name

    @property
    def family(self) -> str:
        """'liif', 'lte', ...: the backbone family the model decodes with (the last part of `kind`)."""
        return self.kind.split("/")[-1]

    @property
    def init_from(self) -> str | None:
        return self.spec.init_from

    @property
    def data(self) -> DataSpec:
        return self.spec.data

    @property
    def optim(self) -> OptimSpec:
        return self.spec.optim

    @property
    def train(self) -> TrainSpec:
        return self.spec.train

    @property
    def loss(self) -> LossSpec:
        return self.spec.loss

    @property
    def eval(self) -> EvalSpec:
        return self.spec.eval

    def to_dict(self) -> dict:
        """The full spec as plain YAML/JSON types; `spec_from_dict` reads it back unchanged."""
        return spec_to_dict(self.spec)

    @functools.cached_property
    def config_hash(self) -> str:
        """`config_hash` of this spec, chained with the parent's hash when `init_from` is set."""
        return config_hash(self.spec, parent_hash=self.parent.config_hash if self.parent else None)

    def metadata(self) -> dict:
        """What every artefact made from this experiment records about it."""
        return {
            "experiment": self.name,
            "profile": self.profile,
            "config_hash": self.config_hash,
            "spec_path": str(self.path) if self.path else None,
        }


def with_loaded_parent(experiment: Experiment, loaded: Mapping[str, Experiment], missing: str) -> Experiment:
    """`experiment` whose parent is `loaded[experiment.init_from]`, the experiment it starts from as loaded with
    the same overrides, so that the chained config hash names the checkpoint it is actually initialised from;
    unchanged without `init_from`. UserError `missing` when `loaded` does not have the parent."""
    if experiment.init_from is None:
        return experiment
    if experiment.init_from not in loaded:
        raise UserError(missing)
    return dataclasses.replace(experiment, parent=loaded[experiment.init_from])


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def spec_to_dict(spec: ExperimentSpec) -> dict:
    """`spec` as nested dicts and lists (tuples become lists)."""
    return _plain(dataclasses.asdict(spec))


def spec_from_dict(data: Mapping, source: str = "<dict>") -> ExperimentSpec:
    """Validate a full or partial spec mapping (dotted keys allowed); missing keys take the schema defaults.

    Raises UserError `'<source>: <problem>'` naming the dotted key.
    """
    try:
        spec = _build(ExperimentSpec, _expand_dotted(data), "")
        _check_values(spec)
    except _SpecError as exc:
        raise UserError(f"{source}: {exc.message}") from None
    return spec


def config_hash(spec: Mapping | ExperimentSpec | Experiment, parent_hash: str | None = None) -> str:
    """12 hex digits of sha256 over the canonical JSON of everything that shapes the trained weights.

    Keys in `HASH_EXCLUDED` are left out. A mapping is validated first, so a partial spec and the
    same spec with its defaults written out hash alike. `parent_hash` (the `init_from` experiment's
    hash) is mixed in when given; `Experiment.config_hash` does that for you.
    """
    if isinstance(spec, Experiment):
        return spec.config_hash
    if isinstance(spec, Mapping):
        spec = spec_from_dict(spec)
    data = spec_to_dict(spec)
    for key in HASH_EXCLUDED:
        *parents, leaf = key.split(".")
        functools.reduce(lambda d, k: d[k], parents, data).pop(leaf, None)
    for key, default in HASH_OMITTED_AT_DEFAULT.items():
        *parents, leaf = key.split(".")
        section = functools.reduce(lambda d, k: d[k], parents, data)
        if section.get(leaf, default) == default:
            section.pop(leaf, None)
    if parent_hash is not None:
        data["init_from_hash"] = parent_hash
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def find_profiles_file(experiment_path: str | Path) -> Path | None:
    """The shared `profiles.yaml` beside the experiment file or one folder up (for experiments/ablations/)."""
    folder = Path(experiment_path).parent
    for candidate in (folder / PROFILES_FILE, folder.parent / PROFILES_FILE):
        if candidate.is_file():
            return candidate
    return None


def _profiles_of(doc: Mapping, source: Path, what: str) -> dict[str, dict]:
    profiles = doc.get("profiles") or {}
    if not isinstance(profiles, Mapping) or not all(isinstance(v, (Mapping, type(None))) for v in profiles.values()):
        raise UserError(f"{source}: '{what}' must map profile names to mappings of overrides")
    return {str(k): _expand_dotted(v or {}) for k, v in profiles.items()}


def _resolve_experiment_file(path: Path) -> Path:
    if path.is_file():
        return path
    if path.suffix != ".yaml" and path.with_suffix(".yaml").is_file():
        return path.with_suffix(".yaml")
    nearby = [p.name for p in path.parent.glob("*.yaml")] if path.parent.is_dir() else []
    close = difflib.get_close_matches(path.name, nearby, n=1)
    hint = f" (did you mean {path.parent / close[0]}?)" if close else ""
    raise UserError(f"{path}: experiment file not found{hint}")


def load_experiment(
    path: str | Path,
    profile: str,
    overrides: Sequence[str] | None = None,
    *,
    profiles_path: str | Path | None = None,
    _chain: tuple[Path, ...] = (),
) -> Experiment:
    """Load `path`, apply the shared and the file's own `profile` overrides, then `overrides`, and validate.

    `overrides` are CLI-style `'dotted.key=value'` strings, values parsed as YAML. `profiles_path`
    defaults to `find_profiles_file(path)`. If `init_from` is set, that experiment (a `.yaml` beside
    this one or beside the profiles file) is loaded too, under the same profile, as `.parent`.
    Every problem is a one-line UserError naming the file and the dotted key.
    """
    path = _resolve_experiment_file(Path(path))
    if profiles_path is None:
        profiles_path = find_profiles_file(path)
    elif not Path(profiles_path).is_file():
        raise UserError(f"{profiles_path}: profiles file not found")
    shared = read_yaml(Path(profiles_path)) if profiles_path else {}
    if profiles_path:
        extra = set(shared) - {"defaults", "profiles"}
        if extra:
            raise UserError(
                f"{profiles_path}: unknown top-level key '{sorted(map(str, extra))[0]}' (expected defaults, profiles)"
            )
    doc = read_yaml(path)
    own_profiles = _profiles_of(doc, path, "profiles")
    shared_profiles = _profiles_of(shared, Path(profiles_path or ""), "profiles")
    bases = _extended(doc, path, profiles_path, (path.resolve(),))

    available = sorted(set(shared_profiles) | set(own_profiles) | {p for *_, profiles in bases for p in profiles})
    if profile not in available:
        close = difflib.get_close_matches(str(profile), available, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UserError(f"{path}: unknown profile {profile!r} ({hint}available: {', '.join(available) or 'none'})")

    layers = [
        (f"{profiles_path} (defaults)", _expand_dotted(shared.get("defaults") or {})),
        (f"{profiles_path} (profile '{profile}')", shared_profiles.get(profile, {})),
        *_extended_layers(bases, profile),
        (str(path), _expand_dotted({k: v for k, v in doc.items() if k not in ("profiles", "extends")})),
        (f"{path} (profiles.{profile})", own_profiles.get(profile, {})),
    ]
    for text in overrides or ():
        key, value = parse_override(text)
        layers.append((f"override '{text}'", _expand_dotted({key: value})))

    # An experiment that starts from another inherits its model spec: the parent's model (as loaded under
    # this profile) is the lowest layer, and this file's `model` keys, if any, override it.
    parent = None
    init_from = next(
        (lay["init_from"] for _, lay in reversed(layers) if isinstance(lay, Mapping) and lay.get("init_from")), None
    )
    if isinstance(init_from, str) and _NAME_RE.match(init_from):
        parent = _load_parent(init_from, path, profile, profiles_path, (*_chain, path.resolve()), {})
        inherited = {"model": {"name": parent.spec.model.name, "args": copy.deepcopy(parent.spec.model.args)}}
        if not any(isinstance(lay, Mapping) and "name" in (lay.get("model") or {}) for _, lay in layers):
            layers.insert(0, (f"{parent.path} (model inherited through init_from)", inherited))
        layers = [(source, _substitute(lay, INHERIT_TOKEN, inherited["model"])) for source, lay in layers]
    elif any(_contains(lay, INHERIT_TOKEN) for _, lay in layers):
        raise UserError(f"{path}: '{INHERIT_TOKEN}' names the init_from experiment's model, but init_from is not set")

    merged: dict = {}
    provenance: dict[str, str] = {}
    for source, layer in layers:
        if not isinstance(layer, Mapping):
            raise UserError(f"{source}: expected a mapping of sections")
        try:
            _check_keys(ExperimentSpec, layer)
        except _SpecError as exc:
            raise UserError(f"{source}: {exc.message}") from None
        merged = deep_merge(merged, layer)
        for leaf in filter(None, _leaves(layer)):
            # a key set now replaces whatever an earlier layer said about it, its parents or children
            for known in [k for k in provenance if _related(k, leaf)]:
                del provenance[known]
            provenance[leaf] = source

    try:
        spec = _build(ExperimentSpec, merged, "")
        _check_values(spec)
    except _SpecError as exc:
        raise UserError(f"{_source_of(exc.key, provenance)}: {exc.message}") from None

    name = spec.name or path.stem
    if not _NAME_RE.match(name):
        raise UserError(f"{path}: the file name {path.stem!r} is not a plain experiment name; set 'name:'")
    spec = dataclasses.replace(spec, name=name)
    if spec.init_from is not None and (parent is None or parent.name != spec.init_from):
        parent = _load_parent(spec.init_from, path, profile, profiles_path, (*_chain, path.resolve()), provenance)
    return Experiment(name=name, profile=profile, spec=spec, path=path, parent=parent, provenance=provenance)


# A model arg whose value is this string takes the `init_from` experiment's model spec (as loaded under the same
# profile), e.g. MoEISR's `backbone_spec: "@init_from"`: one copy of the backbone spec, in the backbone's file.
INHERIT_TOKEN = "@init_from"


def _substitute(value, token: str, replacement):
    """`value` with every string equal to `token` replaced by a deep copy of `replacement` (mappings, lists)."""
    if isinstance(value, str) and value == token:
        return copy.deepcopy(replacement)
    if isinstance(value, Mapping):
        return {k: _substitute(v, token, replacement) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, token, replacement) for v in value]
    return value


def _contains(value, token: str) -> bool:
    if isinstance(value, str):
        return value == token
    if isinstance(value, Mapping):
        return any(_contains(v, token) for v in value.values())
    if isinstance(value, list):
        return any(_contains(v, token) for v in value)
    return False


def _related(a: str, b: str) -> bool:
    """Whether dotted keys `a` and `b` are equal or one contains the other."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _source_of(key: str, provenance: Mapping[str, str]) -> str:
    """The layer that set `key` (or its closest ancestor, or a descendant); the schema default otherwise."""
    key = re.sub(r"\[\d+\]", "", key)
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        found = provenance.get(".".join(parts[:n]))
        if found:
            return found
    below = [src for k, src in provenance.items() if k.startswith(key + ".")]
    return below[-1] if below else "schema default"


def _experiment_file(name, path, profiles_path, chain, key: str, source: str) -> Path:
    """The file of experiment `name` named by `key` (init_from, extends) of `path`: beside it or beside the profiles
    file. UserError (from `source`) when there is none or when it closes a cycle of `chain`."""
    folders = list(dict.fromkeys([path.parent, *([Path(profiles_path).parent] if profiles_path else [])]))
    for folder in folders:
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            break
    else:
        nearby = sorted({p.stem for f in folders for p in f.glob("*.yaml")} - {"profiles"})
        close = difflib.get_close_matches(name, nearby, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"{source}: {key} {name!r}: no {name}.yaml in {', '.join(map(str, folders))}{hint}")
    if candidate.resolve() in chain:
        cycle = " -> ".join(p.stem for p in (*chain, candidate))
        raise UserError(f"{path}: {key} makes a cycle ({cycle})")
    return candidate


def _load_parent(name, path, profile, profiles_path, chain, provenance) -> Experiment:
    source = _source_of("init_from", provenance)
    candidate = _experiment_file(name, path, profiles_path, chain, "init_from", source)
    return load_experiment(candidate, profile, profiles_path=profiles_path, _chain=chain)


# Keys of an extended file that its variant does not take over: the variant's own name is its file's stem.
_NOT_INHERITED = ("profiles", "extends", "name")


def _extended(doc: Mapping, path: Path, profiles_path, chain: tuple[Path, ...]) -> list[tuple[Path, dict, dict]]:
    """The files `doc` (read from `path`) extends, the furthest first: (file, its document, its profiles). Empty
    without `extends`."""
    name = doc.get("extends")
    if name is None:
        return []
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise UserError(f"{path}: extends: expected an experiment name, got {name!r}")
    base = _experiment_file(name, path, profiles_path, chain, "extends", str(path))
    base_doc = read_yaml(base)
    profiles = _profiles_of(base_doc, base, "profiles")
    further = _extended(base_doc, base, profiles_path, (*chain, base.resolve()))
    return [*further, (base, base_doc, profiles)]


def _extended_layers(bases, profile: str) -> list[tuple[str, dict]]:
    """The merge layers of the `_extended` files under `profile`: each file's sections, then its profile's."""
    layers = []
    for base, base_doc, profiles in bases:
        layers.append(
            (f"{base} (extended)", _expand_dotted({k: v for k, v in base_doc.items() if k not in _NOT_INHERITED}))
        )
        layers.append((f"{base} (profiles.{profile}, extended)", profiles.get(profile, {})))
    return layers
