"""Schedules in a real `weir serve`: a job stored with a per-second cron fires by itself,
each tick's run reads its `date={{ds}}` partition and writes what `weir run` writes for
the same variables, and a `kill -9` of the service between ticks loses no tick and
duplicates none (`catchup = "all"`), with the data on local disk and in Garage. A backfill of 30 dates runs two at a time after a dry run, and again for the dates
that failed once their data has landed. The rules themselves (DST, catch-up policies, pauses, edits, max_active_runs, 40
simulated days with a restart) are tested with a driven clock in
jobs/src/service/schedules.rs."""

import json
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import WEIR_BIN, data_files
from helpers import Service, expect, expect_error, wait_run

JOB = """name = "every-two-seconds"
[schedule]
cron = "*/2 * * * * *"
catchup = "all"
max_active_runs = 4
[source]
uri = "{src}/date={{{{ds}}}}/"
columns = ["id", "age"]
[[step]]
op = "filter"
expr = "id >= 0"
[sink]
uri = "{out}/{{{{ds_nodash}}}}/{{{{run_id}}}}"
"""


def scheduled_runs(api):
    runs = expect(api.get("/v1/runs", params={"limit": 500, "job": "every-two-seconds"}), 200)["runs"]
    return sorted(runs, key=lambda run: run["vars"]["logical_time"])


def partition_dates():
    """The dates a tick's data interval may start on while the test runs (UTC), so that the
    source has a `date=` partition for every tick, even across midnight."""
    today = datetime.now(timezone.utc).date()
    return [(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)]


class LocalStore:
    """Partitions under the service's folder; outputs read from disk."""

    def __init__(self, root, events_dir):
        self.root = root
        for ds in partition_dates():
            shutil.copytree(events_dir, root / "in" / f"date={ds}")
        self.src, self.out, self.env = "in", "out", None

    def by_hand_out(self):
        return "by-hand"

    def read(self, prefix: str, ds_nodash: str, run_id: str) -> pa.Table:
        return pq.read_table(data_files(self.root / prefix / ds_nodash / run_id)).sort_by("id")


class GarageStore:
    """Partitions and outputs in two Garage buckets; outputs read back with boto3."""

    def __init__(self, garage, events_dir):
        self.garage = garage
        self.src_bucket, self.dst_bucket = garage.new_bucket("night-src"), garage.new_bucket("night-dst")
        for ds in partition_dates():
            garage.upload_dir(events_dir, self.src_bucket, f"in/date={ds}")
        self.src, self.out = f"s3://{self.src_bucket}/in", f"s3://{self.dst_bucket}/out"
        self.env = garage.env()

    def by_hand_out(self):
        return f"s3://{self.dst_bucket}/by-hand"

    def read(self, prefix: str, ds_nodash: str, run_id: str) -> pa.Table:
        root = "out" if prefix == "out" else "by-hand"
        keys = self.garage.keys(self.dst_bucket, f"{root}/{ds_nodash}/{run_id}/")
        assert f"{root}/{ds_nodash}/{run_id}/_SUCCESS" in keys, keys
        client = self.garage.client()
        parts = [
            pq.read_table(pa.BufferReader(client.get_object(Bucket=self.dst_bucket, Key=key)["Body"].read()))
            for key in keys
            if key.endswith(".parquet") and "/_" not in key
        ]
        return pa.concat_tables(parts).sort_by("id")


@pytest.mark.parametrize("store", ["local", "garage"])
def test_a_per_second_schedule_fires_every_tick_once_across_a_kill_9(tmp_path, events_dir, weir, store, request):
    root = tmp_path.resolve()
    data = LocalStore(root, events_dir) if store == "local" else GarageStore(request.getfixturevalue("garage"), events_dir)
    service = Service(root, ["--max-concurrent-runs", "2"], env=data.env).start()
    try:
        api = service.admin
        definition = JOB.format(src=data.src, out=data.out)
        expect(api.post("/v1/jobs", json={"definition": definition, "vars": {"ds": partition_dates()[1]}}), 201)
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
        paused = definition.replace('cron = "*/2 * * * * *"', 'cron = "0 0 1 1 *"')
        expect(api.post("/v1/jobs", json={"definition": paused, "vars": {"ds": partition_dates()[1]}}), 201)
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
    by_hand = {}
    for run in (runs[0], runs[-1]):
        job = root / f"by-hand-{run['id']}.toml"
        job.write_text(JOB.format(src=data.src, out=data.by_hand_out()))
        variables = [arg for key, value in run["vars"].items() for arg in ("--var", f"{key}={value}")]
        weir("run", job, *variables, "--var", f"run_id={run['id']}", cwd=root, env=data.env, check=0)
        by_hand[run["id"]] = data.read("by-hand", run["vars"]["ds_nodash"], run["id"])
    for run in runs:
        got = data.read("out", run["vars"]["ds_nodash"], run["id"])
        want = by_hand.get(run["id"], by_hand[runs[-1]["id"]])
        assert got.num_rows > 0 and got.equals(want)


DAILY = """name = "daily"
[source]
uri = "in/date={{{{ds}}}}/"
[sink]
uri = "out/date={{{{ds}}}}/"
mode = "overwrite"
"""


def write_partition(root, ds, index):
    part = root / "in" / f"date={ds}"
    part.mkdir(parents=True, exist_ok=True)
    table = pa.table({"id": pa.array(range(index * 100, index * 100 + 100), pa.int64()), "day": pa.array([ds] * 100)})
    pq.write_table(table, part / "part-0.parquet")
    return table


def most_at_once(runs) -> int:
    spans = [(parse(run["started_at"]), parse(run["finished_at"])) for run in runs]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def parse(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_backfill_of_30_dates_two_at_a_time_then_the_failed_ones(tmp_path, weir):
    root = tmp_path.resolve()
    days = [(datetime(2026, 1, 1) + timedelta(days=i)).strftime("%Y-%m-%d") for i in range(30)]
    missing = {days[4], days[16], days[28]}  # three dates whose data has not landed
    tables = {ds: write_partition(root, ds, i) for i, ds in enumerate(days) if ds not in missing}
    service = Service(root, ["--max-concurrent-runs", "4"]).start()
    try:
        api = service.admin
        # Stored after validation with a date whose data is there.
        job = root / "daily.toml"
        job.write_text(DAILY.format())
        service.cli(weir, "jobs", "put", str(job), "--var", f"ds={days[0]}", check=0)

        dry = service.cli(weir, "backfill", "daily", "--from", days[0], "--to", days[-1], "--max-active", "2", "--dry-run", check=0)
        lines = [line for line in dry.stdout.splitlines() if line[:4] == "2026"]
        assert [line.split()[0] for line in lines] == days and all(line.endswith("runs") for line in lines)
        assert "dry run: nothing submitted" in dry.stdout
        assert expect(api.get("/v1/runs", params={"job": "daily"}), 200)["runs"] == []

        proc = service.cli(weir, "backfill", "daily", "--from", days[0], "--to", days[-1], "--max-active", "2", check=0)
        assert "30 run(s), at most 2 at a time" in proc.stdout, proc.stdout
        deadline = time.time() + 300
        while True:
            runs = expect(api.get("/v1/runs", params={"job": "daily", "limit": 500}), 200)["runs"]
            if len(runs) == 30 and all(run["state"] in ("succeeded", "failed") for run in runs):
                break
            assert time.time() < deadline, [run["state"] for run in runs]
            time.sleep(0.3)
        assert most_at_once(runs) <= 2, "--max-active 2"
        failed = sorted(run["vars"]["ds"] for run in runs if run["state"] == "failed")
        assert failed == sorted(missing)
        # Their data had not landed: "input not ready" (the job does not wait for it).
        assert {run["exit_class"] for run in runs if run["state"] == "failed"} == {"input_not_ready"}

        # The data lands; only the failed dates run again.
        for ds in sorted(missing):
            tables[ds] = write_partition(root, ds, days.index(ds))
        dry = service.cli(weir, "backfill", "daily", "--from", days[0], "--to", days[-1], "--reprocess", "failed", "--dry-run", check=0)
        will = [line.split()[0] for line in dry.stdout.splitlines() if line.endswith("runs")]
        assert will == sorted(missing)
        service.cli(weir, "backfill", "daily", "--from", days[0], "--to", days[-1], "--reprocess", "failed", "--max-active", "2", check=0)
        while True:
            runs = expect(api.get("/v1/runs", params={"job": "daily", "limit": 500}), 200)["runs"]
            if len(runs) == 33 and all(run["state"] in ("succeeded", "failed") for run in runs):
                break
            assert time.time() < deadline, [run["state"] for run in runs]
            time.sleep(0.3)
        retried = [run for run in runs if run["submitted_at"] > max(r["submitted_at"] for r in runs if r["vars"]["ds"] not in missing)]
        assert sorted(run["vars"]["ds"] for run in retried) == sorted(missing)
        assert all(run["state"] == "succeeded" for run in retried)
        # A plain backfill over the range now has nothing to do.
        dry = service.cli(weir, "backfill", "daily", "--from", days[0], "--to", days[-1], "--dry-run", check=0)
        assert not [line for line in dry.stdout.splitlines() if line.endswith(" runs")]
    finally:
        service.close()

    for ds, table in tables.items():
        got = pq.read_table(data_files(root / "out" / f"date={ds}"), partitioning=None).sort_by("id")
        assert got.equals(table.sort_by("id")), ds


RETRIED = """name = "retried"
retries = 2
retry_delay_s = 4
[source]
uri = "s3://{bucket}/in/date={{{{ds}}}}/"
[sink]
uri = "out/date={{{{ds}}}}/"
[storage]
max_retries = 1
retry_timeout_s = 2
"""


def test_external_failures_are_retried_and_bad_input_is_not(tmp_path):
    from garage import Garage

    root = tmp_path.resolve()
    server = Garage(root / "garage").start()
    try:
        bucket = server.new_bucket("retried")
        table = pa.table({"id": pa.array(range(50), pa.int64())})
        pq.write_table(table, root / "part-0.parquet")
        server.client().put_object(Bucket=bucket, Key="in/date=2026-01-05/part-0.parquet", Body=(root / "part-0.parquet").read_bytes())
        service = Service(root, [], env=server.env()).start()
        try:
            api = service.admin
            expect(api.post("/v1/jobs", json={"definition": RETRIED.format(bucket=bucket), "vars": {"ds": "2026-01-05"}}), 201)
            server.stop()  # the store goes away: the first attempt fails for an External reason
            expect(api.post("/v1/jobs/retried/backfill", json={"from": "2026-01-05", "to": "2026-01-05"}), 201)
            deadline = time.time() + 120
            while True:
                runs = expect(api.get("/v1/runs", params={"job": "retried"}), 200)["runs"]
                if runs and runs[-1]["state"] == "failed":
                    break
                assert time.time() < deadline, runs
                time.sleep(0.2)
            first = runs[-1]
            assert first["exit_class"] == "external" and first["attempt"] == 1, first
            server.start()  # back before the retry is due
            while True:
                runs = expect(api.get("/v1/runs", params={"job": "retried"}), 200)["runs"]
                if len(runs) == 2 and runs[0]["state"] in ("succeeded", "failed"):
                    break
                assert time.time() < deadline, runs
                time.sleep(0.2)
            retry = runs[0]
            assert retry["state"] == "succeeded", retry
            assert retry["attempt"] == 2 and retry["retry_of"] == first["id"]
            assert parse(retry["started_at"]) - parse(first["finished_at"]) >= timedelta(seconds=4), "retry_delay_s"
            assert retry["vars"] == first["vars"]
            got = pq.read_table(data_files(root / "out" / "date=2026-01-05"), partitioning=None)
            assert got.sort_by("id").equals(table)

            # Bad input (a partition holding a file that is not Parquet) fails once, unretried.
            server.client().put_object(Bucket=bucket, Key="in/date=2026-01-06/part-0.parquet", Body=b"not parquet")
            expect(api.post("/v1/jobs/retried/backfill", json={"from": "2026-01-06", "to": "2026-01-06"}), 201)
            while True:
                runs = expect(api.get("/v1/runs", params={"job": "retried"}), 200)["runs"]
                if len(runs) == 3 and runs[0]["state"] in ("succeeded", "failed"):
                    break
                assert time.time() < deadline, runs
                time.sleep(0.2)
            assert runs[0]["state"] == "failed" and runs[0]["exit_class"] == "user"
            time.sleep(6)
            assert len(expect(api.get("/v1/runs", params={"job": "retried"}), 200)["runs"]) == 3, "no retry of bad input"
        finally:
            service.close()
    finally:
        server.stop()


WAITING = """name = "waiting"
wait_for_input_s = 60
retry_delay_s = 2
[source]
uri = "{root}/in/date={{{{ds}}}}/"
[sink]
uri = "out/date={{{{ds}}}}/"
"""


def test_a_run_waits_for_its_input_to_land(tmp_path, weir):
    root = tmp_path.resolve()
    service = Service(root, []).start()
    try:
        api = service.admin
        # A relative source that holds nothing where the service resolves it is refused.
        message = expect_error(api.post("/v1/jobs", json={"definition": WAITING.format(root=".").replace("./in", "in")}), 422)
        assert "relative path" in message and str(root) in message, message
        # Stored although today's partition is not there: not ready is not invalid.
        expect(api.post("/v1/jobs", json={"definition": WAITING.format(root=root)}), 201)
        expect(api.post("/v1/jobs/waiting/backfill", json={"from": "2026-02-01", "to": "2026-02-01"}), 201)
        deadline = time.time() + 120
        while True:
            runs = expect(api.get("/v1/runs", params={"job": "waiting"}), 200)["runs"]
            if runs and runs[-1]["state"] == "failed":
                break
            assert time.time() < deadline, runs
            time.sleep(0.2)
        assert runs[-1]["exit_class"] == "input_not_ready" and runs[-1]["exit_code"] == 4, runs[-1]
        assert "input not ready" in runs[-1]["error"]
        table = write_partition(root, "2026-02-01", 0)  # the data lands
        while True:
            runs = expect(api.get("/v1/runs", params={"job": "waiting"}), 200)["runs"]
            if runs[0]["state"] == "succeeded":
                break
            assert time.time() < deadline, [(r["state"], r["exit_class"]) for r in runs]
            time.sleep(0.2)
        assert runs[0]["attempt"] == len(runs) >= 2 and {r["retry_of"] for r in runs[:-1]} == {runs[-1]["id"]}
        assert all(r["exit_class"] == "input_not_ready" for r in runs[1:])
        got = pq.read_table(data_files(root / "out" / "date=2026-02-01"), partitioning=None)
        assert got.sort_by("id").equals(table.sort_by("id"))
        # Submitted with `weir submit --wait` for a date that never lands: exit 4 once the wait is over.
        job = root / "short.toml"
        job.write_text(WAITING.format(root=root).replace("wait_for_input_s = 60", "wait_for_input_s = 3").replace('"waiting"', '"short"'))
        proc = service.cli(weir, "submit", str(job), "--var", "ds=2030-01-01", "--wait", check=4)
        assert "input not ready" in proc.stdout, proc.stdout
        # `weir submit --wait` follows the retries: a first attempt that finds no data is
        # not the end when the data lands before the wait is over.
        waiting = root / "waiting.toml"
        waiting.write_text(WAITING.format(root=root))
        args = [str(WEIR_BIN), "submit", str(waiting), "--var", "ds=2026-02-02", "--wait", "--server", service.url, "--token", service.token]
        follower = subprocess.Popen(args, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while True:
            runs = expect(api.get("/v1/runs", params={"job": "waiting"}), 200)["runs"]
            first = [r for r in runs if r["vars"].get("ds") == "2026-02-02" and r["attempt"] == 1]
            if first and first[0]["state"] == "failed":
                break
            assert time.time() < deadline, runs
            time.sleep(0.2)
        landed = write_partition(root, "2026-02-02", 1)
        out, err = follower.communicate(timeout=120)
        assert follower.returncode == 0, (out, err)
        assert "attempt 1 failed" in err and "retries it as run" in err, err
        assert "succeeded" in out, out
        got = pq.read_table(data_files(root / "out" / "date=2026-02-02"), partitioning=None)
        assert got.sort_by("id").equals(landed.sort_by("id"))
    finally:
        service.close()


ONCALL = """name = "nightly"
[schedule]
cron = "0 2 * * *"
[source]
uri = "in/"
[sink]
uri = "out/{{{{ds}}}}/"
mode = "overwrite"
"""


def test_the_on_call_cli_tokens_schedules_versions_and_backfill_wait(tmp_path, weir):
    """What the team on call does from the CLI alone: tokens, pausing and resuming a
    schedule (driven clock), the runs with their logical date and trigger, job versions,
    and a backfill that waits for its runs."""
    root = tmp_path.resolve()
    write_partition(root, "in", 0)  # write_partition's folder layout: in/date=in/
    clock = root / "clock"
    clock.write_text("2026-03-10T01:00:00Z")
    service = Service(root, ["--clock-file", "clock"]).start()
    try:
        api = service.admin
        job = root / "nightly.toml"
        job.write_text(ONCALL.format())
        service.cli(weir, "jobs", "put", str(job), check=0)

        created = json.loads(service.cli(weir, "tokens", "create", "reader", "--role", "read", "--job", "nightly", "--prefix", str(root), check=0).stdout)
        assert created["jobs"] == ["nightly"] and created["prefixes"] == [str(root)] and len(created["token"]) > 20
        listed = service.cli(weir, "tokens", "ls", check=0).stdout
        assert any(line.split()[:2] == ["reader", "read"] and "jobs nightly" in line for line in listed.splitlines()), listed
        assert created["token"] not in listed
        service.cli(weir, "tokens", "revoke", "reader", check=0)
        assert service.api(created["token"]).get("/v1/runs").status_code == 401

        (line,) = service.cli(weir, "schedules", "ls", check=0).stdout.splitlines()
        assert line.split()[0] == "nightly" and "active" in line and "2026-03-10T02:00:00Z" in line, line
        paused = service.cli(weir, "schedules", "pause", "nightly", check=0).stdout
        assert "paused by admin" in paused and "next -" in paused, paused
        clock.write_text("2026-03-10T02:00:30Z")
        deadline = time.time() + 60
        while "last 2026-03-10T02:00:30Z" not in service.cli(weir, "schedules", "ls", check=0).stdout:
            assert time.time() < deadline, "the scheduler did not pass over the paused tick"
            time.sleep(0.2)
        assert expect(api.get("/v1/runs"), 200)["runs"] == [], "a paused schedule fires nothing"
        assert "active" in service.cli(weir, "schedules", "resume", "nightly", check=0).stdout
        clock.write_text("2026-03-11T02:00:30Z")
        while not expect(api.get("/v1/runs"), 200)["runs"]:
            assert time.time() < deadline, "the resumed schedule did not fire"
            time.sleep(0.2)
        (run,) = expect(api.get("/v1/runs"), 200)["runs"]
        assert (run["trigger"], run["logical_date"]) == ("schedule", "2026-03-10"), run
        wait_run(api, run["id"])
        (line,) = service.cli(weir, "runs", "--job", "nightly", check=0).stdout.splitlines()
        assert "ds 2026-03-10  schedule #1" in line and "succeeded" in line, line

        # A second version; `jobs versions` lists both, the newest current.
        job.write_text(ONCALL.format().replace('mode = "overwrite"', 'mode = "overwrite"\ncompression = "snappy"'))
        service.cli(weir, "jobs", "put", str(job), check=0)
        versions = service.cli(weir, "jobs", "versions", "nightly", check=0).stdout.splitlines()
        assert [v.split()[:2] for v in versions] == [["v2", "current"], ["v1", expect(api.get("/v1/jobs/nightly"), 200)["versions"][0]["sha256"]]]

        done = service.cli(weir, "backfill", "nightly", "--from", "2026-03-08", "--to", "2026-03-09", "--max-active", "2", "--wait", check=0).stdout
        finished = [line for line in done.splitlines() if "backfill #1" in line]
        assert [line.split("ds ")[1][:10] for line in finished] == ["2026-03-08", "2026-03-09"], done
        assert all("succeeded" in line for line in finished), done
        for ds in ("2026-03-08", "2026-03-09", "2026-03-10"):
            assert pq.read_table(data_files(root / "out" / ds), partitioning=None).num_rows == 100
    finally:
        service.close()


def test_a_half_landed_partition_is_not_ready_until_its_marker_and_files_are_there(tmp_path, weir):
    root = tmp_path.resolve()
    first = write_partition(root, "2026-04-01", 0)
    ready = '[source.ready]\nmarker = "_SUCCESS"\nmin_files = 2\nstable_for_s = 3600\n'
    job = root / "landing.toml"
    job.write_text(DAILY.format().replace('[sink]', ready + '[sink]'))

    def run(expected):
        return weir("run", job, "--var", "ds=2026-04-01", cwd=root, check=expected).stderr

    part = root / "in" / "date=2026-04-01"
    assert "marker '_SUCCESS'" in run(4)
    (part / "_SUCCESS").write_bytes(b"")
    assert "1 data file(s), fewer than source.ready.min_files = 2" in run(4)
    second = pa.table({"id": pa.array(range(1000, 1100), pa.int64()), "day": pa.array(["2026-04-01"] * 100)})
    pq.write_table(second, part / "part-1.parquet")
    assert "stable_for_s = 3600" in run(4)
    assert not (root / "out" / "date=2026-04-01").exists(), "nothing was written for a source that is not ready"
    two_hours_ago = time.time() - 7200
    for name in ("part-0.parquet", "part-1.parquet"):
        os.utime(part / name, (two_hours_ago, two_hours_ago))
    run(0)
    got = pq.read_table(data_files(root / "out" / "date=2026-04-01"), partitioning=None)
    assert got.sort_by("id").equals(pa.concat_tables([first, second]).sort_by("id"))

    # The service records such a run as input not ready (exit 4), which it retries while
    # wait_for_input_s lasts.
    write_partition(root, "2026-04-02", 1)
    service = Service(root, []).start()
    try:
        definition = job.read_text()
        run_ = expect(service.admin.post("/v1/runs", json={"definition": definition, "vars": {"ds": "2026-04-02"}}), 201)
        ended = wait_run(service.admin, run_["id"])
        assert (ended["state"], ended["exit_class"], ended["exit_code"]) == ("failed", "input_not_ready", 4), ended
        assert "marker '_SUCCESS'" in ended["error"]
    finally:
        service.close()


def test_validate_as_service_resolves_a_job_as_the_service_will(tmp_path, weir):
    """`weir validate` resolves relative paths against the job file's folder; the service
    against its own working directory. `--as-service` asks the service, and stores nothing."""
    root = tmp_path.resolve()
    team = root / "team"
    write_partition(team, "2026-05-01", 0)  # team/in/date=2026-05-01/
    job = team / "daily.toml"
    job.write_text(DAILY.format())
    weir("validate", job, "--var", "ds=2026-05-01", check=0)
    service = Service(root, []).start()
    try:
        refused = service.cli(weir, "validate", str(job), "--var", "ds=2026-05-01", "--as-service", check=2)
        assert "relative path" in refused.stderr and str(root) in refused.stderr, refused.stderr
        job.write_text(DAILY.format().replace('uri = "in/', f'uri = "{team}/in/').replace('uri = "out/', f'uri = "{team}/out/'))
        fine = service.cli(weir, "validate", str(job), "--var", "ds=2026-05-01", "--as-service", check=0)
        assert "job 'daily' is valid as the service runs it" in fine.stdout and f"{team}/out/date=2026-05-01" in fine.stdout
        assert expect(service.admin.get("/v1/jobs"), 200)["jobs"] == [], "nothing was stored"
    finally:
        service.close()
