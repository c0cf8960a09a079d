"""Stage timings of a pipeline run: `timings.json`, merged under a file lock so that parallel jobs
(`reproduce --models`, `ablations --rows`) keep each other's entries.

The file holds `profile`, `commit`, a `stages` mapping (stage -> {seconds, finished, commit, details}, plus
`last_checked` when a later run only re-checked that stage) and any other top-level sections a pipeline
records (`experiments`, `estimate_seconds`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from moeisr.io import FileLock, atomic_write_text, read_json_object

MERGED_SECTIONS = ("stages", "experiments")  # merged entry by entry; other keys are replaced


def stamp() -> str:
    """The local wall-clock time, as the timings and reports print it."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def load_timings(path: Path) -> dict:
    """The timings file as a dict ({} if it is missing or unreadable)."""
    return read_json_object(path)


def record_stage(stage_times: dict, stage: str, seconds: float, details: str, commit: str, did_work: bool) -> None:
    """Record a stage's wall time; a stage that only reused earlier work keeps the timing of the run that did it."""
    previous = stage_times.get(stage)
    if not did_work and isinstance(previous, dict) and previous.get("seconds") is not None:
        previous["last_checked"] = f"{stamp()}: {details}"
        return
    stage_times[stage] = {"seconds": round(seconds, 1), "finished": stamp(), "commit": commit, "details": details}


def save_timings(path: Path, timings: dict, loaded: dict) -> dict:
    """Write this job's changes to `timings` (against `loaded`, the file as this job read it) over the file as it
    is now, under its lock; returns what was written. Entries of `MERGED_SECTIONS` another job wrote since
    `loaded` are kept; this job's own changed entries win."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        current = load_timings(path)
        for key, value in timings.items():
            if key in MERGED_SECTIONS:
                before = loaded.get(key, {})
                mine = {k: v for k, v in value.items() if before.get(k) != v}
                current[key] = {**current.get(key, {}), **mine}
            elif loaded.get(key) != value or key not in current:
                current[key] = value
        atomic_write_text(path, json.dumps(current, indent=2, sort_keys=True) + "\n")
    return current
