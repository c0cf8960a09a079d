"""No number is typed into the prose that the pipeline writes: every figure in REPORT.md, the tables and the CLI
summaries is computed or read from an artefact. The test scans the string literals of the modules that write
prose and fails on a measured-looking number (a decimal, or an integer with a unit) that is not one of the few
protocol constants listed below with the reason it may stay.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROSE_MODULES = [
    *sorted((REPO / "moeisr" / "report").rglob("*.py")),
    REPO / "moeisr" / "pipeline" / "ablations.py",
    REPO / "moeisr" / "commands" / "report.py",
    *sorted((REPO / "bench").glob("report*.py")),
]
# A measured-looking number: a decimal (0.09, 2.9), or an integer followed by a unit.
NUMBER = re.compile(
    r"(?<![\w.{:%-])(\d+\.\d+|\d+)\s?(dB|min\b|h\b|s/step|steps\b|residual blocks|channels\b|MB\b|GFLOPs|×|%|x\b)"
    r"|(?<![\w.{:%-])\d+\.\d+(?![\w}])"
)
# Protocol constants, not measurements: allowed where they appear, each with why.
ALLOWED = {
    "0.01 dB": "the reproduction target stated by the issue and `recheck.PSNR_TOLERANCE_DB`",
    "1.5 dB": "the quality floor a backbone must pass (bicubic + 1.5 dB), a stated rule",
    "95%": "the confidence level of an interval",
    "255": "8-bit levels",
    "100%": "the definition of a relative axis (100% = the same cost)",
}


def prose_literals(path: Path):
    """(line, text) of every string constant outside docstrings, f-string parts included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def typed_numbers(path: Path) -> list[str]:
    found = []
    for line, text in prose_literals(path):
        if " " not in text.strip():  # identifiers, format specs, column names
            continue
        for match in NUMBER.finditer(text):
            token = match.group(0).strip()
            if any(token.startswith(a) or a.startswith(token) for a in ALLOWED):
                continue
            found.append(f"{path.relative_to(REPO)}:{line}: {token!r} in {text[:80]!r}")
    return found


def test_prose_modules_exist():
    assert len(PROSE_MODULES) >= 8 and all(p.is_file() for p in PROSE_MODULES)


def test_no_typed_numbers_in_the_prose_writers():
    found = [f for path in PROSE_MODULES for f in typed_numbers(path)]
    assert not found, "numbers typed into prose (compute or read them):\n" + "\n".join(found)


def test_the_scan_finds_the_numbers_that_were_typed_before(tmp_path, monkeypatch):
    monkeypatch.setattr(__import__(__name__), "REPO", tmp_path)
    module = tmp_path / "m.py"
    module.write_text(
        '"""Docstrings may quote 0.5 dB."""\n'
        'NOTE = "Set14 sits about 0.09 dB above them: its Y difference is 0.859 × the grey one"\n'
        'CPU = f"shrunk encoders (4 residual blocks, 32 channels; {n} steps)"\n'
        'OK = "target ≤ 0.01 dB, on Set5 and B100 at x{scale:g}"\n'
    )
    found = [f.split(": ", 1)[1].split(" in ")[0] for f in typed_numbers(module)]
    assert found == ["'0.09 dB'", "'0.859 ×'", "'4 residual blocks'", "'32 channels'"]
