"""Schedules in a real `weir serve`: a job stored with a per-second cron fires by itself,
each tick's run gets the tick's variables and writes what `weir run` writes for them, and a
`kill -9` of the service between ticks loses no tick and duplicates none (`catchup =
"all"`). The rules themselves (DST, catch-up policies, pauses, edits, max_active_runs, 40
simulated days with a restart) are tested with a driven clock in
jobs/src/service/schedules.rs."""

import os
import signal
import time
from datetime import datetime, timedelta

import pyarrow.parquet as pq

from conftest import data_files
from helpers import Service, expect, wait_run

JOB = """name = "every-two-seconds"
[schedule]
cron = "*/2 * * * * *"
catchup = "all"
max_active_runs = 4
[source]
uri = "{src}"
columns = ["id", "age"]
[[step]]
op = "filter"
expr = "id >= 0"
[sink]
uri = "out/{{{{ds_nodash}}}}/{{{{run_id}}}}"
"""


def scheduled_runs(api):
    runs = expect(api.get("/v1/runs", params={"limit": 500, "job": "every-two-seconds"}), 200)["runs"]
    return sorted(runs, key=lambda run: run["vars"]["logical_time"])


def test_a_per_second_schedule_fires_every_tick_once_across_a_kill_9(tmp_path, events_dir, weir):
    service = Service(tmp_path.resolve(), ["--max-concurrent-runs", "2"]).start()
    try:
        api = service.admin
        definition = JOB.format(src=events_dir)
        expect(api.post("/v1/jobs", json={"definition": definition}), 201)
        deadline = time.time() + 120
        while len(scheduled_runs(api)) < 4:
            assert time.time() < deadline, "the schedule did not fire"
            time.sleep(0.2)

        # Down for about 5 s: two or three ticks pass while nothing listens.
        os.kill(service.proc.pid, signal.SIGKILL)
        service.proc.wait(timeout=15)
        time.sleep(5)
        service.start()
        api = service.admin
        while len(scheduled_runs(api)) < 10:
            assert time.time() < deadline, f"only {len(scheduled_runs(api))} ticks ran"
            time.sleep(0.2)
        expect(api.post("/v1/jobs", json={"definition": definition.replace('cron = "*/2 * * * * *"', 'cron = "0 0 1 1 *"')}), 201)
        runs = [wait_run(api, run["id"]) for run in scheduled_runs(api)]
    finally:
        service.close()

    ticks = [datetime.fromisoformat(run["vars"]["logical_time"].replace("Z", "+00:00")) for run in runs]
    assert len(set(ticks)) == len(ticks), "no tick ran twice"
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert all(gap == timedelta(seconds=2) for gap in gaps), f"no tick was lost: {ticks}"
    keys = [run["idempotency_key"] for run in runs]
    assert keys == [f"schedule/every-two-seconds/{run['vars']['logical_time']}" for run in runs]
    for run, tick in zip(runs, ticks):
        assert run["state"] == "succeeded", run
        assert run["vars"]["interval_end"] == run["vars"]["logical_time"]
        start = datetime.fromisoformat(run["vars"]["interval_start"].replace("Z", "+00:00"))
        assert tick - start == timedelta(seconds=2)
        assert run["vars"]["ds"] == start.strftime("%Y-%m-%d") and run["vars"]["ds_nodash"] == start.strftime("%Y%m%d")

    # Each run's output is what `weir run` writes for the same variables.
    last = runs[-1]
    job = tmp_path / "by-hand.toml"
    job.write_text(definition.replace("out/", "by-hand/"))
    weir("run", job, *[arg for key, value in last["vars"].items() for arg in ("--var", f"{key}={value}")], "--var", f"run_id={last['id']}", cwd=tmp_path, check=0)
    for run in (runs[0], last):
        got = pq.read_table(data_files(tmp_path / "out" / run["vars"]["ds_nodash"] / run["id"])).sort_by("id")
        want = pq.read_table(data_files(tmp_path / "by-hand" / last["vars"]["ds_nodash"] / last["id"])).sort_by("id")
        assert got.equals(want)
