"""The failure table (docs/troubleshooting.md, linked from the README) names tests that exist, and every
reliability test is in it."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
README = TESTS.parent / "README.md"
TROUBLESHOOTING = TESTS.parent / "docs" / "troubleshooting.md"


def failure_section() -> str:
    assert "(docs/troubleshooting.md)" in README.read_text(encoding="utf-8"), "the README links the table"
    return TROUBLESHOOTING.read_text(encoding="utf-8")


def defined_tests() -> dict[str, set[str]]:
    """test file name -> the test functions it defines."""
    return {
        path.name: set(re.findall(r"^def (test_\w+)\(", path.read_text(encoding="utf-8"), flags=re.M))
        for path in TESTS.glob("test_*.py")
    }


def test_every_test_the_table_names_exists():
    section = failure_section()
    defined = defined_tests()
    files = set(re.findall(r"\b(test_\w+\.py)\b", section))
    assert files and files <= set(defined), files - set(defined)
    names = set(re.findall(r"\b(test_\w+)\b(?!\.py)", section)) - {f[:-3] for f in files}
    everything = set().union(*defined.values())
    assert names and not names - everything, sorted(names - everything)


def test_every_reliability_test_is_in_the_table():
    section = failure_section()
    for name, tests in defined_tests().items():
        if name.startswith("test_reliability_") and tests and name != "test_reliability_readme.py":
            assert name in section, name
            if name in ("test_reliability_cli.py", "test_reliability_properties.py"):
                continue  # named as a whole file
            assert not {t for t in tests if t not in section}, (name, sorted(t for t in tests if t not in section))
