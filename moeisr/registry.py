"""A `register`/`make` registry for `{name, args}` specs, as in LIIF, without global mutable state
leaking across users: each `Registry` is an explicit object owned by the module that defines it.

Specs nest: an `args` value that is itself a spec (e.g. `encoder_spec`) is built by the model that
receives it, so a model spec reads top-down like the model.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping
from typing import Any


class Registry:
    """Maps names (and official aliases) to constructors."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str, *aliases: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(ctor):
            for key in (name, *aliases):
                if key in self._entries and self._entries[key] is not ctor:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
                self._entries[key] = ctor
            return ctor

        return decorator

    def names(self) -> list[str]:
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(self.names())})"
            raise KeyError(f"unknown {self.kind} {name!r}{hint}")
        return self._entries[name]

    def make(self, spec: Mapping[str, Any], args: Mapping[str, Any] | None = None) -> Any:
        """Build `spec['name'](**spec['args'], **args)`; `args` overrides the spec's own."""
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ValueError(f"a {self.kind} spec must be a mapping with a 'name' key, got {spec!r}")
        kwargs = copy.deepcopy(dict(spec.get("args") or {}))
        if args:
            kwargs.update(args)
        return self.get(spec["name"])(**kwargs)


models = Registry("model")
