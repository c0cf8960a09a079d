"""The speed suite's fixtures and options. Run with `nox -s bench` (or `pytest bench/ --benchmark-json=...`).

Never collected by `nox -s tests` (pyproject's testpaths is `tests`). The results of every test go into one
session `Store`; at the end of the session `report.py` writes results/bench/ (summary.json, bench.md, a
figure). The raw pytest-benchmark JSON goes where `--benchmark-json` says (the nox session: results/bench/).
"""

from __future__ import annotations

import os
from pathlib import Path

import benchlib as B
import pytest
import torch


def pytest_addoption(parser):
    group = parser.getgroup("moeisr bench")
    group.addoption(
        "--bench-large",
        action="store_true",
        help="also run the full-size memory cases (LIIF/LTE × EDSR/RDN × {×4 of 1024², ×30 of 256²})",
    )
    group.addoption(
        "--bench-set14", default=None, help="comma-separated Set14 image names for the sweeps (default: all 14)"
    )
    group.addoption("--bench-threads", type=int, default=None, help="torch threads (default: torch's, = cores)")


def pytest_configure(config):
    threads = config.getoption("--bench-threads", default=None)
    if threads:
        torch.set_num_threads(threads)
    config._moeisr_bench_store = B.Store(machine={"load_average_at_start": os.getloadavg()})
    B.RESULTS.mkdir(parents=True, exist_ok=True)
    raw_json = getattr(config.option, "benchmark_json", None)
    if raw_json:  # pytest-benchmark writes it at session end and does not create its folder
        Path(str(getattr(raw_json, "name", raw_json))).parent.mkdir(parents=True, exist_ok=True)


def pytest_sessionfinish(session, exitstatus):
    store: B.Store = session.config._moeisr_bench_store
    store.machine["load_average_at_end"] = os.getloadavg()
    if not any((store.decoder, store.upscale, store.reference, store.overheads, store.memory, store.experiments)):
        return
    import report  # bench/report.py

    paths = report.write(store, B.RESULTS)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"moeisr bench: wrote {', '.join(str(p) for p in paths)}")


@pytest.fixture(scope="session")
def store(request) -> B.Store:
    return request.config._moeisr_bench_store


@pytest.fixture(scope="session")
def zoo(store):
    """name -> model (built once per session; weights recorded in the store)."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            model, weights = B.build_model(name)
            cache[name] = model
            store.weights[name] = weights
        return cache[name]

    return get


@pytest.fixture(scope="session")
def set14_names(request) -> list[str] | None:
    value = request.config.getoption("--bench-set14")
    return None if not value else [v.strip() for v in value.split(",") if v.strip()]


@pytest.fixture(scope="session")
def large(request) -> bool:
    return bool(request.config.getoption("--bench-large"))


@pytest.fixture(autouse=True)
def _no_grad_state():
    torch.manual_seed(B.SEED)
    yield
