"""timings.json is merged under a lock: parallel jobs (reproduce --models, ablations --rows) keep each other's
entries."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from moeisr.pipeline.timings import load_timings, record_stage, save_timings

JOB = textwrap.dedent(
    """
    import sys, time
    from moeisr.pipeline.timings import load_timings, record_stage, save_timings
    path, name = sys.argv[1], sys.argv[2]
    loaded = load_timings(path)
    timings = {**loaded, "stages": dict(loaded.get("stages", {}))}
    time.sleep(0.5)  # both jobs read the file before either writes
    record_stage(timings["stages"], f"train ({name})", 1.0, name, "c", did_work=True)
    save_timings(path, timings, loaded)
    """
)


def test_two_jobs_that_read_before_either_writes_keep_both_entries(tmp_path):
    path = tmp_path / "timings.json"
    save_timings(path, {"profile": "cpu", "stages": {"report": {"seconds": 3}}}, {})
    jobs = [subprocess.Popen([sys.executable, "-c", JOB, str(path), n]) for n in ("liif-j2", "lte-tau5")]
    assert [job.wait(timeout=60) for job in jobs] == [0, 0]
    stages = json.loads(path.read_text())["stages"]
    assert set(stages) == {"report", "train (liif-j2)", "train (lte-tau5)"}


def test_a_stage_that_did_no_work_keeps_the_timing_of_the_run_that_did():
    stages = {}
    record_stage(stages, "eval", 120.0, "84 rows", "abc", did_work=True)
    record_stage(stages, "eval", 0.5, "0 rows", "def", did_work=False)
    assert stages["eval"]["seconds"] == 120.0 and stages["eval"]["commit"] == "abc"
    assert stages["eval"]["last_checked"].endswith(": 0 rows")


def test_the_ablations_write_timings_through_the_locked_merge():
    import inspect

    from moeisr.pipeline import ablations as run

    source = inspect.getsource(run.run_ablations)
    assert "save_timings(" in source and "atomic_write_text(paths.timings" not in source
    assert load_timings(run.__file__ + ".missing") == {}
