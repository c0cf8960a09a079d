"""Conventions of the tidy result rows that every layer above evaluate shares: the model and set orders, subset
labels and the usual row order."""

from __future__ import annotations

import re

import pandas as pd

SET_ORDER = ("Set5", "Set14", "B100", "Urban100", "DIV2K")
MATCH_KEYS = ["model", "dataset", "image", "scale", "knob"]
# recipe v1's models, then recipe v2's from the converged backbones (the dense controls are v2's)
MODEL_ORDER = (
    "bicubic", "liif", "liif-equal-budget", "moeisr-liif", "liif-converged", "liif-equal-budget-v2",
    "liif-d1", "liif-d2", "liif-d3", "moeisr-liif-v2", "lm-liif",
    "lte", "lte-equal-budget", "moeisr-lte", "lte-converged", "lte-equal-budget-v2",
    "lte-d1", "lte-d2", "moeisr-lte-v2", "lm-lte",
)  # fmt: skip


SEED_MARK = "-seed"  # a seed replica's `model` value: "<model>-seed<k>", the model trained with train.seed=k
_REPLICA = re.compile(r"^(?P<model>.+)-seed(?P<seed>\d+)$")


def replica_name(model: str, seed: int) -> str:
    """The `model` value of `model`'s replica trained with seed `seed`: 'moeisr-liif' → 'moeisr-liif-seed1'."""
    return f"{model}{SEED_MARK}{seed}"


def replica_of(model: str) -> tuple[str, int] | None:
    """(the main model, the seed) of a seed replica's `model` value, or None for any other model."""
    match = _REPLICA.match(str(model))
    return (match["model"], int(match["seed"])) if match else None


def model_rank(model: str) -> tuple[int, int]:
    """Sort key of a `model` value: its place in MODEL_ORDER (unknown models after), seed replicas right after
    their main model, by seed."""
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    main, seed = replica_of(model) or (model, -1)
    return order.get(main, len(order)), seed


def dataset_label(name: str, n: int, total: int | None) -> str:
    """'Urban100 (first 20)' when a subset was evaluated, else the set's name."""
    return f"{name} (first {n})" if total is not None and n < total else name


def sort_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in the usual order: datasets as in SET_ORDER (others after, by name), then scale, then knob."""
    order = {name: i for i, name in enumerate(SET_ORDER)}
    keys = [c for c in ("dataset", "scale", "knob", "image") if c in frame.columns]

    def key(column: pd.Series) -> pd.Series:
        if column.name == "dataset":
            return column.map(lambda d: (order.get(d, len(order)), d))
        return column

    return frame.sort_values(keys, key=key, kind="stable").reset_index(drop=True)
