"""The package's imports point down only: a module may import its own layer's or lower layers' modules, never a
higher layer's, and no import cycle exists between modules or packages (docs/architecture.md).

Imports inside functions count as well: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "moeisr"

# Lowest first. A module belongs to the first entry that is a prefix of its dotted name (after "moeisr.").
LAYERS = [
    ("core", ["errors", "io", "registry", "config", "provenance", "coords", "artefacts"]),
    ("data, metrics, models", ["data", "metrics", "models"]),
    ("flops", ["flops"]),
    ("train, evaluate", ["train", "evaluate"]),
    ("pipeline", ["pipeline"]),
    ("report", ["report"]),
    ("commands", ["commands", "cli", "__main__"]),
]
# The package root only re-exports `load_model` (lazily); it may reach down into models.
ROOT_ALLOWED = {"models"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    rest = module.split(".", 1)[1] if "." in module else ""
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(rest == p or rest.startswith(p + ".") for p in prefixes):
            return index
    return None


def imports_of(path: Path) -> set[str]:
    """The moeisr modules `path` imports (absolute names; `from moeisr.x import y` counts y if it is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {  # `if TYPE_CHECKING:` blocks are annotations, not dependencies at run time
        id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for stmt in block.body for n in ast.walk(stmt)
    }  # fmt: skip
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("moeisr")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("moeisr") and not node.level:
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                    PACKAGE.parent / Path(*candidate.split(".")) / "__init__.py"
                ).exists():
                    found.add(candidate)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    unplaced = [m for m in graph() if m != "moeisr" and layer_of(m) is None]
    assert not unplaced, f"modules outside the declared layers: {unplaced}"


def test_imports_point_down_only():
    upward = []
    for module, targets in graph().items():
        if module == "moeisr":
            bad = [t for t in targets if layer_of(t) is not None and t.split(".")[1] not in ROOT_ALLOWED]
            upward += [f"moeisr -> {t}" for t in bad]
            continue
        own = layer_of(module)
        if own is None:
            continue
        for target in sorted(targets):
            theirs = layer_of(target)
            if target != "moeisr" and theirs is not None and theirs > own:
                upward.append(f"{module} ({LAYERS[own][0]}) -> {target} ({LAYERS[theirs][0]})")
    assert not upward, "upward imports:\n" + "\n".join(upward)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def test_no_module_cycles():
    modules = graph()
    edges = {m: {t for t in ts if t in modules and not m.startswith(t + ".")} for m, ts in modules.items()}
    assert not _cycles(edges), f"module import cycles: {_cycles(edges)}"


def test_no_package_cycles():
    packages = defaultdict(set)
    for module, targets in graph().items():
        source = ".".join(module.split(".")[:2])
        for target in targets:
            dest = ".".join(target.split(".")[:2])
            if dest != source and source != "moeisr":
                packages[source].add(dest)
    assert not _cycles(packages), f"package import cycles: {_cycles(packages)}"


def test_the_checker_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from moeisr.report.tables import x\nimport moeisr.data.benchmark\n")
    assert imports_of(module) >= {"moeisr.report.tables", "moeisr.data.benchmark"}
    assert layer_of("moeisr.models.base") == 1 and layer_of("moeisr.report.tables") == 5
