"""End-to-end tests of `weir serve`, the job service, and of its CLI client.

Every test starts a real `weir serve` (the `serve` fixture) in its tmp dir: `--state-dir
state --listen 127.0.0.1:0 --address-file addr`, the address read from the address file,
the admin token from `state/admin.token`; teardown stops it (SIGTERM, then SIGKILL) and
kills any `weir run` left in that folder. The tests talk to it over HTTP with `requests`
and through the CLI (`weir submit`, `runs`, `status`, `logs`, `cancel`, `jobs`), and check
what the runs wrote with pyarrow, against `weir run` of the same job file or a pyarrow
reference. Covered:

- first start: the admin token (mode 0600), the address file, SIGTERM exits 0, a restart
  reuses the token and the history;
- a submitted run (stored job and inline, `weir submit --wait`) commits the same rows as
  `weir run`, under its run id, with rows_in/rows_out, job_version, exit_code; a run that
  fails on bad data is `failed`/`user`;
- cancelling a queued run (it never starts) and a running one (nothing committed, within
  the grace), and 409 for a run that has ended;
- idempotency keys; tokens, roles, job scopes, revocation, Host and Origin checks, the
  audit trail; bad definitions refused with `weir validate`'s message, nothing stored;
- job versions and rollback; `kill -9` of the service mid-run and restart (the run in
  flight re-attached, finished from its result file if it ended meanwhile, or lost if its
  process was killed; queued runs then run; no run starts twice); 200 submissions from 8
  threads; logs (offsets, follow, `weir logs`); `/metrics`.
"""

import concurrent.futures
import hashlib
import json
import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, data_files, read_output, write_job
from helpers import (
    CLEAN_JOB,
    SERVICE_TERMINAL as TERMINAL,
    Service,
    alive,
    assert_committed,
    assert_same_rows,
    clean_reference,
    expect,
    expect_error,
    get_run,
    live_glob,
    processes_with,
    submit,
    wait_gone,
    wait_run,
)

GRACE_S = 5





# ---------------------------------------------------------------------------------------
# The service under test


@pytest.fixture
def serve(tmp_path):
    """serve(*flags) starts `weir serve` in tmp_path; all are stopped at teardown."""
    started = []

    def start(*flags):
        service = Service(tmp_path.resolve(), flags).start()
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()


# ---------------------------------------------------------------------------------------
# Data and jobs


@pytest.fixture(scope="session")
def big_source(tmp_path_factory):
    """2,000,000 rows (an id and three float columns) in two files of 50,000-row groups,
    written once per session, and how many rows have a >= 0.1.

    The long runs read it in batches of 8 rows with one worker and filter it (`slow_job`):
    measured on the 2-core test machine (debug build) at ~8.7 s for the whole run when the
    machine is idle (twice that when it is busy; batches of 16 took ~4.7 s), the first part
    staged after ~2 s. That keeps a run `running` long enough to cancel it mid-write, or
    to kill and restart the service under it, while the tests stay short."""
    src = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(2026)
    rows, files = 2_000_000, 2
    kept = 0
    for index in range(files):
        n = rows // files
        a = rng.random(n)
        kept += int((a >= 0.1).sum())
        table = pa.table({"id": np.arange(index * n, (index + 1) * n, dtype=np.int64), "a": a, "b": rng.random(n), "c": rng.random(n)})
        pq.write_table(table, src / f"part-{index}.parquet", row_group_size=50_000)
    return src, rows, kept


def slow_job(src: Path, name="slow", batch_size=8) -> str:
    return f"""name = "{name}"

[source]
uri = "{src}"
batch_size = {batch_size}

[[step]]
op = "filter"
expr = "a >= 0.1"

[sink]
uri = "out/{name}/{{{{run_id}}}}"
row_group_rows = 4096
"""


@pytest.fixture
def small(tmp_path):
    """2,000 rows (`id`, `x`, and `s`: float texts, the last one not a number) in two files
    under tmp_path/small; jobs name it by the relative path `small`, which the service
    resolves against its working directory."""
    src = tmp_path / "small"
    src.mkdir()
    rng = np.random.default_rng(11)
    x = rng.random(2_000)
    s = [f"{v:.4f}" for v in rng.normal(size=2_000)]
    s[-1] = "oops"
    table = pa.table({"id": np.arange(2_000, dtype=np.int64), "x": x, "s": pa.array(s, type=pa.string())})
    pq.write_table(table.slice(0, 1_200), src / "part-0.parquet", row_group_size=400)
    pq.write_table(table.slice(1_200), src / "part-1.parquet", row_group_size=400)
    return table


def small_job(name="small", threshold=0.5, sink="out/{name}/{{{{run_id}}}}") -> str:
    """Rows of `small` with x >= threshold, into out/NAME/RUN_ID (relative URIs)."""
    return f"""name = "{name}"

[source]
uri = "small"

[[step]]
op = "filter"
expr = "x >= {threshold}"

[sink]
uri = "{sink.format(name=name)}"
"""


def at_least(table: pa.Table, threshold: float) -> int:
    return int(pc.sum(pc.greater_equal(table["x"], threshold)).as_py())


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------
# Calls


def wait_staged(out: Path, api, run_id, timeout=120.0):
    """Waits until the run has staged a part file under its output (it is mid-write)."""
    deadline = time.time() + timeout
    while not any(p.name.startswith("part-") for p in live_glob(out, "**/*")):
        run = get_run(api, run_id)
        assert run["state"] in ("queued", "running"), f"run {run_id} ended before staging anything: {run}"
        assert time.time() < deadline, f"run {run_id} staged nothing in {timeout} s"
        time.sleep(0.05)


def all_runs(api, limit=50, **filters):
    """Every run of the history, through the pages of GET /v1/runs (`before` = `next`)."""
    runs, before = [], None
    while True:
        params = {"limit": limit, **filters}
        if before is not None:
            params["before"] = before
        response = api.get("/v1/runs", params=params)
        if response.status_code != 200:
            raise AssertionError(f"GET /v1/runs {params} -> {response.status_code}: {response.text}")
        page = response.json()
        assert len(page["runs"]) <= limit
        runs.extend(page["runs"])
        before = page["next"]
        if before is None:
            return runs
        assert before == page["runs"][-1]["id"], "next is the last run of the page"


def cli_runs(svc, weir, *args, token=None) -> list:
    """`weir runs ARGS --json`: the runs it prints."""
    proc = svc.cli(weir, "runs", *args, "--json", token=token)
    if proc.returncode != 0:
        raise AssertionError(f"weir runs {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return json.loads(proc.stdout)["runs"]


def run_pids(run_id) -> list:
    """The live processes of a run (`weir run … --var run_id=ID`)."""
    return processes_with(f"run_id={run_id}")


def parse_time(text) -> datetime:
    assert isinstance(text, str) and (text.endswith("Z") or text.endswith("+00:00")), f"not an RFC 3339 UTC time: {text!r}"
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def manifest_of(out: Path) -> dict:
    return json.loads((out / "_weir" / "manifest.json").read_text())


def expect_text(response, status=200) -> str:
    assert response.status_code == status, f"{response.request.path_url} -> {response.status_code}: {response.text}"
    return response.text


def metric(text: str, name: str) -> float:
    """The value of one sample (`name` with its labels, as printed) of a Prometheus text."""
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    assert len(values) == 1, f"{name}: {values} in\n{text}"
    return float(values[0])


# ---------------------------------------------------------------------------------------
# Starting


def test_first_start_writes_an_admin_token_and_a_restart_reuses_it_and_the_history(serve, weir, small):
    svc = serve()
    token_file = svc.state / "admin.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    lines = token_file.read_text().splitlines()
    assert len(lines) == 1 and len(lines[0]) >= 32
    assert "admin.token" in svc.output, "the first start says where the admin token is"
    assert svc.url.startswith("http://127.0.0.1:") and int(svc.url.rsplit(":", 1)[1]) > 0
    health = svc.api(None).get("/healthz")
    assert health.status_code == 200 and health.text.strip() == "ok"
    run = wait_run(svc.admin, submit(svc.admin, {"definition": small_job()})["id"])
    assert run["state"] == "succeeded"

    assert svc.stop() == 0, f"SIGTERM: the service exits 0\n{svc.output}"
    svc.start()
    assert svc.starts == 2
    assert token_file.read_text().splitlines() == lines, "a restart keeps the admin token"
    assert "created an admin token" not in svc.output
    assert get_run(svc.admin, run["id"]) == run, "the history survives a restart"
    assert [r["id"] for r in all_runs(svc.admin)] == [run["id"]]
    assert [r["id"] for r in cli_runs(svc, weir)] == [run["id"]]


# ---------------------------------------------------------------------------------------
# Runs


def test_a_run_commits_what_weir_run_commits_under_its_own_id(serve, weir, events_dir, tmp_path):
    svc = serve()
    text = CLEAN_JOB.format(src=events_dir, out=str(tmp_path / "clean") + "/{{run_id}}", mode="error_if_exists")
    job = write_job(tmp_path / "clean.toml", text)
    local = weir("run", job, "--var", "run_id=reference", "-w", "2", "--json", cwd=tmp_path, check=0)
    summary = json.loads(local.stdout)
    want = read_output(tmp_path / "clean" / "reference")
    assert_same_rows(want, clean_reference(events_dir))

    put = expect(svc.admin.post("/v1/jobs", json={"definition": text}), 201)
    assert put == {"name": "clean-events", "version": 1, "sha256": sha256(text), "created": True}
    run = submit(svc.admin, {"job": "clean-events"})
    assert run["state"] in ("queued", "running")
    assert (run["job"], run["job_version"], run["job_sha256"]) == ("clean-events", 1, sha256(text))
    assert run["submitted_by"] == "admin" and run["vars"] == {} and run["idempotency_key"] is None
    parse_time(run["submitted_at"])

    done = wait_run(svc.admin, run["id"])
    assert done["state"] == "succeeded", done
    assert done["exit_code"] == 0 and done["exit_class"] is None and done["error"] is None
    assert done["job_version"] == 1 and done["cancel_requested"] is False
    assert done["rows_in"] == summary["rows_in"] == sum(pq.ParquetFile(f).metadata.num_rows for f in data_files(events_dir))
    assert done["rows_out"] == summary["rows_out"] == want.num_rows
    assert parse_time(done["submitted_at"]) <= parse_time(done["started_at"]) <= parse_time(done["finished_at"])
    assert isinstance(done["duration_s"], (int, float)) and done["duration_s"] >= 0
    out = svc.root / "clean" / run["id"]
    assert done["output_uri"].rstrip("/") == out.as_uri()
    assert_committed(out, want.num_rows)
    assert manifest_of(out)["run_id"] == run["id"]
    assert_same_rows(read_output(out), want)

    # The same job file, inline, through `weir submit --wait`.
    cli = svc.cli(weir, "submit", job, "--wait", "--json", check=0)
    inline = json.loads(cli.stdout)
    assert inline["state"] == "succeeded" and inline["exit_code"] == 0
    assert inline["job"] == "clean-events" and inline["job_version"] is None and inline["job_sha256"] == sha256(text)
    assert inline["id"] != run["id"] and inline["rows_out"] == want.num_rows
    out2 = tmp_path / "clean" / inline["id"]
    assert manifest_of(out2)["run_id"] == inline["id"]
    assert_same_rows(read_output(out2), want)
    status = svc.cli(weir, "status", inline["id"], "--json", check=0)
    assert json.loads(status.stdout) == inline


def test_a_run_that_fails_on_bad_data_is_failed_user_and_submit_wait_exits_2(serve, weir, small, tmp_path):
    svc = serve()
    text = small_job("strict-cast").replace(
        '[[step]]\nop = "filter"', '[[step]]\nop = "cast"\ncolumns = { s = "float64" }\non_error = "fail"\n\n[[step]]\nop = "filter"'
    )
    job = write_job(tmp_path / "strict.toml", text)
    assert weir("validate", job, cwd=tmp_path).returncode == 0, "the data, not the job, is bad"
    run = submit(svc.admin, {"definition": text})
    done = wait_run(svc.admin, run["id"])
    cli = svc.cli(weir, "submit", job, "--wait")
    assert done["state"] == "failed", done
    assert done["exit_class"] == "user" and done["exit_code"] == 2
    assert "oops" in done["error"] and done["rows_out"] is None
    assert not (tmp_path / "out" / "strict-cast" / run["id"] / "_SUCCESS").exists()
    assert cli.returncode == 2, cli.stdout + cli.stderr


# ---------------------------------------------------------------------------------------
# Cancelling


def test_cancelling_a_queued_run_ends_it_at_once_and_it_never_starts(serve, weir, big_source, small, tmp_path):
    svc = serve("--max-concurrent-runs", "1", "--cancel-grace-s", GRACE_S)
    src, _, _ = big_source
    slow = submit(svc.admin, {"definition": slow_job(src), "workers": 1})
    wait_run(svc.admin, slow["id"], {"running"})
    queued = submit(svc.admin, {"definition": small_job("waiting")})
    time.sleep(1.2)  # a few turns of the queue: the one slot is taken, so it waits
    assert get_run(svc.admin, queued["id"])["state"] == "queued"

    reply = expect(svc.admin.post(f"/v1/runs/{queued['id']}/cancel"), 200)
    assert reply["id"] == queued["id"] and reply["state"] == "cancelled", reply
    assert reply["cancel_requested"] is True and reply["started_at"] is None and reply["finished_at"] is not None
    expect_error(svc.admin.post(f"/v1/runs/{queued['id']}/cancel"), 409)

    # Free the slot (through the CLI), then let the queue run another job after it.
    svc.cli(weir, "cancel", slow["id"], check=0)
    assert wait_run(svc.admin, slow["id"], timeout=GRACE_S + 10)["state"] == "cancelled"
    after = submit(svc.admin, {"definition": small_job("after")})
    assert wait_run(svc.admin, after["id"])["state"] == "succeeded"
    time.sleep(0.6)
    final = get_run(svc.admin, queued["id"])
    assert final["state"] == "cancelled" and final["started_at"] is None, final
    assert run_pids(queued["id"]) == []
    out = tmp_path / "out" / "waiting" / queued["id"]
    assert not (out / "_SUCCESS").exists() and data_files(out) == []


def test_cancelling_a_running_run_stops_it_within_the_grace_and_commits_nothing(serve, weir, big_source, small, tmp_path):
    svc = serve("--cancel-grace-s", GRACE_S)
    src, _, _ = big_source
    run = submit(svc.admin, {"definition": slow_job(src), "workers": 1})
    out = tmp_path / "out" / "slow" / run["id"]
    wait_staged(out, svc.admin, run["id"])
    pids = run_pids(run["id"])
    assert pids, "the run's process is running"
    assert all(os.getpgid(pid) == os.getpgid(pids[0]) != os.getpgid(svc.proc.pid) for pid in pids), "own process group"

    began = time.monotonic()
    reply = expect(svc.admin.post(f"/v1/runs/{run['id']}/cancel"), 200)
    assert reply["cancel_requested"] is True and reply["state"] in ("running", "cancelled"), reply
    done = wait_run(svc.admin, run["id"], timeout=GRACE_S + 30)
    took = time.monotonic() - began
    assert done["state"] == "cancelled", done
    assert took < GRACE_S + 1, f"cancelled after {took:.1f} s, the grace is {GRACE_S} s"
    assert done["finished_at"] is not None and done["started_at"] is not None and done["rows_out"] is None
    assert wait_gone(pids, 5) == [], "every process of the run is gone"
    assert not (out / "_SUCCESS").exists()
    assert data_files(out) == [], "no part file is visible in the output prefix"
    expect_error(svc.admin.post(f"/v1/runs/{run['id']}/cancel"), 409)

    # A run that succeeded cannot be cancelled either (API and CLI), and stays succeeded.
    ok = submit(svc.admin, {"definition": small_job()})
    assert wait_run(svc.admin, ok["id"])["state"] == "succeeded"
    expect_error(svc.admin.post(f"/v1/runs/{ok['id']}/cancel"), 409)
    cli = svc.cli(weir, "cancel", ok["id"], check=2)
    assert cli.stderr.startswith("weir: error: ")
    assert get_run(svc.admin, ok["id"])["state"] == "succeeded"
    assert expect_error(svc.admin.post("/v1/runs/no-such-run/cancel"), 404)


# ---------------------------------------------------------------------------------------
# Idempotency


def test_an_idempotency_key_returns_the_same_run_or_conflicts(serve, weir, small, tmp_path):
    svc = serve()
    text = small_job("keyed", sink="out/{name}/{{{{tag}}}}/{{{{run_id}}}}")
    body = {"definition": text, "vars": {"tag": "a"}, "idempotency_key": "nightly-2026-11-30"}
    first = submit(svc.admin, body, 201)
    # Keys are per job: stored (and shown) under the job's name.
    assert first["vars"] == {"tag": "a"} and first["idempotency_key"] == "job/keyed/nightly-2026-11-30"
    again = submit(svc.admin, body, 200)
    assert again["id"] == first["id"]
    assert wait_run(svc.admin, first["id"])["state"] == "succeeded"
    assert submit(svc.admin, body, 200)["id"] == first["id"], "also once the run has ended"

    expect_error(svc.admin.post("/v1/runs", json={**body, "definition": small_job("keyed", threshold=0.7, sink="out/{name}/{{{{tag}}}}/{{{{run_id}}}}")}), 409)
    expect_error(svc.admin.post("/v1/runs", json={**body, "vars": {"tag": "b"}}), 409)
    expect_error(svc.admin.post("/v1/runs", json={**body, "vars": {}}), 422)  # {{tag}} is unknown without it

    job = write_job(tmp_path / "keyed.toml", text)
    same = svc.cli(weir, "submit", job, "--var", "tag=a", "--idempotency-key", "nightly-2026-11-30", check=0)
    assert same.stdout.strip() == first["id"]
    other = svc.cli(weir, "submit", job, "--var", "tag=b", "--idempotency-key", "nightly-2026-11-30", check=2)
    assert other.stderr.startswith("weir: error: ")

    # A stored job: the key finds the run while the job's version is the same.
    expect(svc.admin.post("/v1/jobs", json={"definition": small_job("stored")}), 201)
    by_name = submit(svc.admin, {"job": "stored", "idempotency_key": "k2"}, 201)
    assert submit(svc.admin, {"job": "stored", "idempotency_key": "k2"}, 200)["id"] == by_name["id"]
    expect(svc.admin.post("/v1/jobs", json={"definition": small_job("stored", threshold=0.8)}), 201)
    expect_error(svc.admin.post("/v1/runs", json={"job": "stored", "idempotency_key": "k2"}), 409)

    history = all_runs(svc.admin, limit=500)
    assert [r["id"] for r in history if r["idempotency_key"] == "job/keyed/nightly-2026-11-30"] == [first["id"]]
    assert [r["id"] for r in history if r["idempotency_key"] == "job/stored/k2"] == [by_name["id"]]
    assert len(history) == 2


# ---------------------------------------------------------------------------------------
# Access control


def test_tokens_roles_scopes_hosts_origins_and_the_audit_trail(serve, weir, big_source, small, tmp_path):
    svc = serve("--cancel-grace-s", GRACE_S)
    admin, anonymous = svc.admin, svc.api(None)
    src, _, _ = big_source

    health = anonymous.get("/healthz")
    assert health.status_code == 200 and health.text.strip() == "ok"
    wrong = svc.api("weir_" + "0" * 64)
    for api in (anonymous, wrong):
        for method, path in [("GET", "/v1/runs"), ("GET", "/v1/jobs"), ("GET", "/v1/tokens"), ("GET", "/v1/audit"), ("GET", "/metrics"), ("GET", "/v1/runs/x/logs")]:
            expect_error(api.request(method, path), 401)
        expect_error(api.post("/v1/runs", json={"definition": small_job("job-a")}), 401)
        expect_error(api.post("/v1/tokens", json={"name": "intruder", "role": "admin"}), 401)
    expect_error(svc.api(f"{svc.token}x").get("/v1/runs"), 401)

    reader = expect(admin.post("/v1/tokens", json={"name": "reader", "role": "read"}), 201)
    submitter = expect(admin.post("/v1/tokens", json={"name": "submitter", "role": "submit", "jobs": None, "inline": True}), 201)
    scoped = expect(admin.post("/v1/tokens", json={"name": "only-a", "role": "submit", "jobs": ["job-a"], "inline": True}), 201)
    assert (reader["name"], reader["role"], reader["jobs"]) == ("reader", "read", None)
    assert (scoped["role"], scoped["jobs"]) == ("submit", ["job-a"])
    assert len({reader["token"], submitter["token"], scoped["token"], svc.token}) == 4
    expect_error(admin.post("/v1/tokens", json={"name": "reader", "role": "admin"}), 409)
    listed = expect(admin.get("/v1/tokens"), 200)
    assert {t["name"] for t in listed["tokens"]} == {"admin", "reader", "submitter", "only-a"}
    assert all("token" not in t for t in listed["tokens"])
    for secret in (reader["token"], submitter["token"], scoped["token"], svc.token):
        assert secret not in json.dumps(listed), "token values are shown once, never listed"

    read, sub, only_a = svc.api(reader["token"]), svc.api(submitter["token"]), svc.api(scoped["token"])
    # read: GET jobs, runs, logs, metrics; no submit, cancel, tokens, audit, jobs upload
    expect(read.get("/v1/jobs"), 200)
    assert read.get("/metrics").status_code == 200
    expect_error(read.post("/v1/runs", json={"definition": small_job("job-a")}), 403)
    expect_error(read.get("/v1/tokens"), 403)
    expect_error(read.get("/v1/audit"), 403)
    expect_error(read.post("/v1/jobs", json={"definition": small_job("job-a")}), 403)
    refused = svc.cli(weir, "submit", write_job(tmp_path / "a.toml", small_job("job-a")), token=reader["token"], check=2)
    assert refused.stderr.startswith("weir: error: ") and "read" in refused.stderr

    # submit: runs and cancels; no jobs upload, rollback, tokens, audit
    slow = submit(sub, {"definition": slow_job(src), "workers": 1})
    assert slow["submitted_by"] == "submitter"
    assert get_run(read, slow["id"])["id"] == slow["id"]
    expect_text(read.get(f"/v1/runs/{slow['id']}/logs"))
    expect_error(read.post(f"/v1/runs/{slow['id']}/cancel"), 403)
    expect_error(sub.post("/v1/jobs", json={"definition": small_job("job-a")}), 403)
    expect_error(sub.post("/v1/jobs/job-a/rollback", json={"version": 1}), 403)
    expect_error(sub.post("/v1/tokens", json={"name": "mine", "role": "admin"}), 403)
    expect_error(sub.get("/v1/audit"), 403)
    assert expect(sub.post(f"/v1/runs/{slow['id']}/cancel"), 200)["cancel_requested"] is True

    # a token scoped to job-a: submits, sees and cancels job-a's runs only
    run_a = submit(only_a, {"definition": small_job("job-a")})
    expect_error(only_a.post("/v1/runs", json={"definition": small_job("job-b")}), 403)
    run_b = submit(sub, {"definition": small_job("job-b")})
    expect_error(only_a.get(f"/v1/runs/{run_b['id']}"), 403)
    expect_error(only_a.post(f"/v1/runs/{run_b['id']}/cancel"), 403)
    expect_error(only_a.get(f"/v1/runs/{run_b['id']}/logs"), 403)
    assert get_run(only_a, run_a["id"])["job"] == "job-a"
    # /metrics counts every job's runs: not for a scoped token.
    assert "every job" in expect_error(only_a.get("/metrics"), 403)

    # revoked: 401 from then on
    assert admin.delete("/v1/tokens/reader").status_code == 204
    expect_error(read.get("/v1/runs"), 401)
    gone = svc.cli(weir, "runs", token=reader["token"], check=2)
    assert gone.stderr.startswith("weir: error: ")
    assert "reader" not in {t["name"] for t in expect(admin.get("/v1/tokens"), 200)["tokens"]}

    # Host (DNS rebinding) and Origin (cross-site)
    port = svc.host.rsplit(":", 1)[1]
    expect_error(admin.get("/v1/jobs", headers={"Host": f"evil.example:{port}"}), 403)
    expect_error(admin.get("/v1/jobs", headers={"Host": "127.0.0.1:1"}), 403)
    expect(admin.get("/v1/jobs", headers={"Host": f"localhost:{port}"}), 200)
    expect_error(admin.get("/v1/jobs", headers={"Origin": "http://evil.example"}), 403)
    expect_error(admin.get("/v1/jobs", headers={"Origin": f"http://evil.example:{port}"}), 403)
    expect_error(admin.post("/v1/runs", json={"definition": small_job("job-a")}, headers={"Origin": "http://evil.example"}), 403)
    expect(admin.get("/v1/jobs", headers={"Origin": f"http://127.0.0.1:{port}"}), 200)
    expect(admin.get("/v1/jobs", headers={"Origin": f"http://localhost:{port}"}), 200)

    assert wait_run(admin, slow["id"], timeout=GRACE_S + 30)["state"] == "cancelled"
    for run in (run_a, run_b):
        assert wait_run(admin, run["id"])["state"] == "succeeded"
    audit = expect(admin.get("/v1/audit"), 200)["events"]
    seen = {(e["token"], e["action"], e["target"]) for e in audit}
    for want in [
        ("admin", "token.create", "reader"),
        ("admin", "token.create", "submitter"),
        ("admin", "token.create", "only-a"),
        ("submitter", "run.submit", slow["id"]),
        ("only-a", "run.submit", run_a["id"]),
        ("submitter", "run.submit", run_b["id"]),
        ("submitter", "run.cancel", slow["id"]),
        ("admin", "token.revoke", "reader"),
    ]:
        assert want in seen, f"{want} missing from the audit trail: {sorted(seen)}"
    assert not any(e["token"] == "reader" for e in audit), "refused requests do nothing"
    assert all(parse_time(e["at"]) for e in audit)
    # refused requests are not actions: 3 submissions and 3 tokens, no more
    assert len([e for e in audit if e["action"] == "run.submit"]) == 3
    assert len([e for e in audit if e["action"] == "token.create"]) == 3

    # The history as each token sees it (last: it needs GET /v1/runs).
    assert {r["job"] for r in all_runs(only_a)} == {"job-a"}
    assert {r["job"] for r in cli_runs(svc, weir, token=scoped["token"])} == {"job-a"}
    assert {r["job"] for r in all_runs(admin)} == {"job-a", "job-b", "slow"}
    reader2 = expect(admin.post("/v1/tokens", json={"name": "reader-2", "role": "read"}), 201)
    assert {r["job"] for r in all_runs(svc.api(reader2["token"]))} == {"job-a", "job-b", "slow"}


def test_an_unauthenticated_request_is_401_whatever_its_body(serve):
    svc = serve()
    anonymous = svc.api(None)
    expect_error(anonymous.post("/v1/tokens", json={}), 401)
    expect_error(anonymous.post("/v1/runs", json={"bogus": 1}), 401)
    expect_error(anonymous.post("/v1/runs", data="not json"), 401)
    expect_error(anonymous.post("/v1/jobs/x/rollback", json={}), 401)


# ---------------------------------------------------------------------------------------
# Bad definitions

BAD_DEFINITIONS = {
    # binding the steps: the message is validate's, word for word
    "unknown-column": 'name = "bad"\n\n[source]\nuri = "small"\n\n[[step]]\nop = "select"\ncolumns = ["nope"]\n\n[sink]\nuri = "out/bad"\n',
    # opening the source (relative to the service's working directory): not Parquet. (A
    # source with no data yet is not refused: it is "input not ready", see test_schedules.)
    "corrupt-source": 'name = "bad"\n\n[source]\nuri = "not-parquet.txt"\n\n[sink]\nuri = "out/bad"\n',
    # TOML syntax: validate names the file, the service 'definition'
    "toml-syntax": 'name = "bad"\n\n[source\nuri = "small"\n',
    # an unknown op is a TOML error too (with the line and column)
    "unknown-op": 'name = "bad"\n\n[source]\nuri = "small"\n\n[[step]]\nop = "frobnicate"\n\n[sink]\nuri = "out/bad"\n',
    # an unknown variable: validate names the file, the service 'definition'
    "unknown-variable": 'name = "bad"\n\n[source]\nuri = "small"\n\n[sink]\nuri = "out/{{nothere}}"\n',
}


@pytest.mark.parametrize("case", sorted(BAD_DEFINITIONS))
def test_a_bad_definition_is_refused_with_validates_message_and_nothing_is_stored(serve, weir, small, tmp_path, case):
    svc = serve()
    text = BAD_DEFINITIONS[case]
    (tmp_path / "not-parquet.txt").write_text("not a Parquet file at all")
    job = write_job(tmp_path / f"{case}.toml", text)
    checked = weir("validate", job.name, cwd=tmp_path, check=2)
    prefix = "weir: error: "
    assert checked.stderr.startswith(prefix) and checked.stderr.endswith("\n"), checked.stderr
    message = checked.stderr[len(prefix) : -1]
    want = message.replace(f"job file '{job.name}'", "job file 'definition'")
    if case in ("toml-syntax", "unknown-op", "unknown-variable"):
        assert want != message, "validate names the file here"
    else:
        assert want == message and job.name not in message

    assert expect_error(svc.admin.post("/v1/jobs", json={"definition": text}), 422) == want
    assert expect_error(svc.admin.post("/v1/runs", json={"definition": text}), 422) == want
    put = svc.cli(weir, "jobs", "put", job, check=2)
    assert put.stderr == f"{prefix}{want}\n"
    sent = svc.cli(weir, "submit", job, check=2)
    assert sent.stderr == f"{prefix}{want}\n"

    assert expect(svc.admin.get("/v1/jobs"), 200) == {"jobs": []}
    expect_error(svc.admin.get("/v1/jobs/bad"), 404)
    assert not any(e["action"] in ("job.put", "run.submit") for e in expect(svc.admin.get("/v1/audit"), 200)["events"])
    assert all_runs(svc.admin) == []


def test_a_definition_with_variables_is_checked_with_the_given_vars(serve, small):
    svc = serve()
    text = small_job("with-vars", sink="out/{name}/{{{{day}}}}/{{{{run_id}}}}")
    expect_error(svc.admin.post("/v1/jobs", json={"definition": text}), 422)
    assert expect(svc.admin.post("/v1/jobs", json={"definition": text, "vars": {"day": "2026-11-30"}}), 201)["version"] == 1
    expect_error(svc.admin.post("/v1/runs", json={"job": "with-vars"}), 422)
    run = submit(svc.admin, {"job": "with-vars", "vars": {"day": "d1"}})
    assert wait_run(svc.admin, run["id"])["state"] == "succeeded"
    assert manifest_of(svc.root / "out" / "with-vars" / "d1" / run["id"])["run_id"] == run["id"]


# ---------------------------------------------------------------------------------------
# Job versions


def test_job_versions_and_rollback(serve, weir, small, tmp_path):
    svc = serve()
    v1, v2 = small_job("versioned", threshold=0.5), small_job("versioned", threshold=0.9)
    assert expect(svc.admin.post("/v1/jobs", json={"definition": v1}), 201) == {"name": "versioned", "version": 1, "sha256": sha256(v1), "created": True}
    assert expect(svc.admin.post("/v1/jobs", json={"definition": v2}), 201) == {"name": "versioned", "version": 2, "sha256": sha256(v2), "created": True}
    assert expect(svc.admin.post("/v1/jobs", json={"definition": v2}), 200) == {"name": "versioned", "version": 2, "sha256": sha256(v2), "created": False}
    put = svc.cli(weir, "jobs", "put", write_job(tmp_path / "v2.toml", v2), check=0)
    assert json.loads(put.stdout)["created"] is False

    listed = expect(svc.admin.get("/v1/jobs"), 200)["jobs"]
    assert [(j["name"], j["version"], j["sha256"]) for j in listed] == [("versioned", 2, sha256(v2))]
    parse_time(listed[0]["updated_at"])
    assert json.loads(svc.cli(weir, "jobs", "list", check=0).stdout) == {"jobs": listed}
    shown = expect(svc.admin.get("/v1/jobs/versioned"), 200)
    assert (shown["name"], shown["version"], shown["sha256"], shown["definition"]) == ("versioned", 2, sha256(v2), v2)
    assert [(v["version"], v["sha256"], v["created_by"]) for v in shown["versions"]] == [(1, sha256(v1), "admin"), (2, sha256(v2), "admin")]
    assert all(parse_time(v["created_at"]) for v in shown["versions"])
    version_1 = expect(svc.admin.get("/v1/jobs/versioned/versions/1"), 200)
    assert version_1 == {"name": "versioned", "version": 1, "sha256": sha256(v1), "definition": v1, "created_by": "admin", "created_at": shown["versions"][0]["created_at"]}
    expect_error(svc.admin.get("/v1/jobs/versioned/versions/3"), 404)
    expect_error(svc.admin.get("/v1/jobs/unknown"), 404)

    rolled = expect(svc.admin.post("/v1/jobs/versioned/rollback", json={"version": 1}), 200)
    assert (rolled["name"], rolled["version"], rolled["sha256"], rolled["definition"]) == ("versioned", 1, sha256(v1), v1)
    assert len(rolled["versions"]) == 2
    expect_error(svc.admin.post("/v1/jobs/versioned/rollback", json={"version": 7}), 404)
    assert json.loads(svc.cli(weir, "jobs", "show", "versioned", check=0).stdout)["version"] == 1

    run = submit(svc.admin, {"job": "versioned"})
    assert (run["job_version"], run["job_sha256"]) == (1, sha256(v1))
    done = wait_run(svc.admin, run["id"])
    assert done["state"] == "succeeded" and done["rows_out"] == at_least(small, 0.5) and done["rows_in"] == small.num_rows
    pinned = submit(svc.admin, {"job": "versioned", "version": 2})
    assert (pinned["job_version"], pinned["job_sha256"]) == (2, sha256(v2))
    assert wait_run(svc.admin, pinned["id"])["rows_out"] == at_least(small, 0.9)
    for unknown in ({"job": "versioned", "version": 5}, {"job": "unknown"}):
        response = svc.admin.post("/v1/runs", json=unknown)
        assert response.status_code in (404, 422), response.text
    cli = json.loads(svc.cli(weir, "submit", "versioned", "--wait", "--json", check=0).stdout)
    assert (cli["job_version"], cli["job_sha256"], cli["rows_out"]) == (1, sha256(v1), at_least(small, 0.5))

    # A rollback through the CLI, back to version 2.
    assert json.loads(svc.cli(weir, "jobs", "rollback", "versioned", "2", check=0).stdout)["version"] == 2
    assert submit(svc.admin, {"job": "versioned"})["job_version"] == 2
    actions = [(e["action"], e["target"]) for e in expect(svc.admin.get("/v1/audit"), 200)["events"]]
    assert actions.count(("job.put", "versioned")) == 2, "an upload identical to the current version is no new version"
    assert actions.count(("job.rollback", "versioned")) == 2


# ---------------------------------------------------------------------------------------
# kill -9 and restart


def test_after_kill_9_a_restart_reattaches_the_run_in_flight_and_runs_the_queue(serve, big_source, small, tmp_path):
    svc = serve("--max-concurrent-runs", "1")
    src, rows, kept = big_source
    slow = submit(svc.admin, {"definition": slow_job(src), "workers": 1})
    queued = [submit(svc.admin, {"definition": small_job(f"queued-{i}")}) for i in range(3)]
    out = tmp_path / "out" / "slow" / slow["id"]
    wait_staged(out, svc.admin, slow["id"])
    before = get_run(svc.admin, slow["id"])
    assert before["state"] == "running" and before["started_at"] is not None
    assert all(get_run(svc.admin, q["id"])["state"] == "queued" for q in queued)
    pids = run_pids(slow["id"])
    assert pids and all(os.getpgid(pid) == os.getpgid(pids[0]) != os.getpgid(svc.proc.pid) for pid in pids)

    svc.kill9()
    assert all(alive(pid) for pid in pids), "the run outlives the service"
    svc.start()
    assert all(alive(pid) for pid in pids), "the run was still in flight when the service came back"
    back = get_run(svc.admin, slow["id"])
    assert back["state"] == "running" and back["started_at"] == before["started_at"], back

    done = wait_run(svc.admin, slow["id"], timeout=180)
    assert done["state"] == "succeeded", done
    assert done["started_at"] == before["started_at"], "the run was not started again"
    assert (done["rows_in"], done["rows_out"], done["exit_code"]) == (rows, kept, 0)
    assert_committed(out, kept)
    assert manifest_of(out)["run_id"] == slow["id"]
    assert all(slow["id"] in p.name for p in data_files(out)), "every part is this run's"
    log = (svc.state / "runs" / slow["id"] / "log").read_text()
    assert log.count("committed") == 1, f"the log shows one run that committed once:\n{log}"
    assert set(run_pids(slow["id"])) <= set(pids), "no second process of the run"

    finished = parse_time(done["finished_at"])
    for q in queued:
        run = wait_run(svc.admin, q["id"])
        assert run["state"] == "succeeded" and run["rows_out"] == at_least(small, 0.5), run
        # one slot: the queue waited for the re-attached run
        assert parse_time(run["started_at"]) >= finished, (run, done)
    metrics = expect_text(svc.admin.get("/metrics"))
    assert metric(metrics, "weir_runs_started_total") == 4
    history = all_runs(svc.admin)
    ids = [r["id"] for r in history]
    assert len(ids) == len(set(ids)) == 4
    assert all(r["state"] == "succeeded" and r["started_at"] for r in history)


def test_a_run_whose_process_died_with_the_service_is_lost_and_the_queue_drains(serve, big_source, small, tmp_path):
    svc = serve("--max-concurrent-runs", "1")
    src, _, _ = big_source
    slow = submit(svc.admin, {"definition": slow_job(src), "workers": 1})
    queued = [submit(svc.admin, {"definition": small_job(f"queued-{i}")}) for i in range(2)]
    out = tmp_path / "out" / "slow" / slow["id"]
    wait_staged(out, svc.admin, slow["id"])
    before = get_run(svc.admin, slow["id"])
    pids = run_pids(slow["id"])
    assert pids
    staged = [p for p in (out / "_weir" / "runs").iterdir() if p.name.startswith(slow["id"] + ".")]
    assert staged, "the run had staged its part file under its attempt's directory"

    svc.kill9()
    group = os.getpgid(pids[0])
    assert group == pids[0] or group in pids, "the run leads its own process group"
    os.killpg(group, signal.SIGKILL)
    assert wait_gone(pids, 10) == []
    svc.start()

    lost = wait_run(svc.admin, slow["id"], timeout=60)
    assert lost["state"] == "lost", lost
    assert "what it had staged was removed" in lost["error"], lost["error"]
    assert not any(p.exists() for p in staged), "the lost run's staged files are gone"
    assert lost["started_at"] == before["started_at"] and lost["finished_at"] is not None
    for q in queued:
        assert wait_run(svc.admin, q["id"])["state"] == "succeeded"
    assert get_run(svc.admin, slow["id"])["state"] == lost["state"], "a lost run stays lost"
    assert run_pids(slow["id"]) == [], "the lost run was not started again"
    assert not (out / "_SUCCESS").exists() and data_files(out) == []
    log = (svc.state / "runs" / slow["id"] / "log")
    assert "committed" not in (log.read_text() if log.exists() else "")
    ids = [r["id"] for r in all_runs(svc.admin)]
    assert len(ids) == len(set(ids)) == 3


def test_a_run_that_ended_while_the_service_was_down_is_finished_from_its_result(serve, big_source, small, tmp_path):
    svc = serve("--max-concurrent-runs", "1")
    src, rows, kept = big_source
    run = submit(svc.admin, {"definition": slow_job(src, name="ends-alone", batch_size=64), "workers": 1})
    queued = submit(svc.admin, {"definition": small_job("after-restart")})
    wait_run(svc.admin, run["id"], {"running"})
    before = get_run(svc.admin, run["id"])
    pids = run_pids(run["id"])
    assert pids
    svc.kill9()
    assert wait_gone(pids, 120) == [], "the run ends on its own"
    svc.start()
    done = wait_run(svc.admin, run["id"], timeout=60)
    assert done["state"] == "succeeded", done
    assert (done["rows_in"], done["rows_out"], done["exit_code"]) == (rows, kept, 0)
    assert done["started_at"] == before["started_at"]
    out = tmp_path / "out" / "ends-alone" / run["id"]
    assert_committed(out, kept)
    assert manifest_of(out)["run_id"] == run["id"]
    assert wait_run(svc.admin, queued["id"])["state"] == "succeeded"
    assert run_pids(run["id"]) == []
    ids = [r["id"] for r in all_runs(svc.admin)]
    assert sorted(ids) == sorted([run["id"], queued["id"]])


# ---------------------------------------------------------------------------------------
# Many clients


def test_200_submissions_from_8_threads_all_run_once(serve, weir, small, tmp_path):
    svc = serve("--max-concurrent-runs", "2")
    text = small_job("many", threshold=0.25)
    began = time.monotonic()

    def client(k):
        api = svc.api(svc.token)
        ids = []
        for i in range(25):
            run = submit(api, {"definition": text, "workers": 1, "vars": {}})
            assert run["state"] in ("queued", "running")
            ids.append(run["id"])
        return ids

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        submitted = [run_id for ids in pool.map(client, range(8)) for run_id in ids]
    assert len(submitted) == len(set(submitted)) == 200

    deadline = time.time() + 400
    ended = {run_id: wait_run(svc.admin, run_id, timeout=max(1.0, deadline - time.time())) for run_id in submitted}
    took = time.monotonic() - began
    print(f"200 runs from 8 clients, 2 at a time: {took:.1f} s")
    assert [run for run in ended.values() if run["state"] != "succeeded"] == []
    assert {run["rows_out"] for run in ended.values()} == {at_least(small, 0.25)}
    for run_id in submitted:
        assert manifest_of(tmp_path / "out" / "many" / run_id)["run_id"] == run_id
    assert metric(expect_text(svc.admin.get("/metrics")), 'weir_runs{state="succeeded"}') == 200

    history = all_runs(svc.admin, limit=37)
    ids = [r["id"] for r in history]
    assert len(ids) == len(set(ids)) == 200 and set(ids) == set(submitted)
    assert [r for r in history if r["state"] != "succeeded"] == []
    assert {r["rows_out"] for r in history} == {at_least(small, 0.25)}
    assert all(r["started_at"] and r["finished_at"] for r in history)
    submitted_at = [parse_time(r["submitted_at"]) for r in history]
    assert submitted_at == sorted(submitted_at, reverse=True), "newest first"
    assert len(all_runs(svc.admin, limit=500)) == 200
    assert len(all_runs(svc.admin, limit=50, state="succeeded", job="many")) == 200
    assert all_runs(svc.admin, state="queued") == []
    assert len(cli_runs(svc, weir, "--limit", "500")) == 200


# ---------------------------------------------------------------------------------------
# Logs and metrics


def test_logs_by_offset_followed_and_through_the_cli(serve, weir, big_source):
    svc = serve()
    src, _, kept = big_source
    run = submit(svc.admin, {"definition": slow_job(src, name="logged", batch_size=32), "workers": 1})
    assert get_run(svc.admin, run["id"])["state"] in ("queued", "running"), "follow starts before the run ends"
    with svc.admin.get(f"/v1/runs/{run['id']}/logs", params={"follow": "true"}, stream=True, timeout=180) as followed:
        assert followed.status_code == 200 and followed.headers["content-type"].startswith("text/plain")
        streamed = b"".join(followed.iter_content(chunk_size=None))
    ended = get_run(svc.admin, run["id"])
    assert ended["state"] in TERMINAL, "the stream ends only once the run has ended"
    assert ended["state"] == "succeeded" and ended["rows_out"] == kept

    whole = svc.admin.get(f"/v1/runs/{run['id']}/logs")
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("text/plain")
    assert int(whole.headers["X-Weir-Next-Offset"]) == len(whole.content) > 0
    assert whole.content == (svc.state / "runs" / run["id"] / "log").read_bytes()
    assert streamed == whole.content, "follow streams the whole log"
    assert "committed" in whole.text
    half = len(whole.content) // 2
    tail = svc.admin.get(f"/v1/runs/{run['id']}/logs", params={"offset": half})
    assert tail.content == whole.content[half:] and int(tail.headers["X-Weir-Next-Offset"]) == len(whole.content)
    end = svc.admin.get(f"/v1/runs/{run['id']}/logs", params={"offset": len(whole.content)})
    assert end.content == b"" and int(end.headers["X-Weir-Next-Offset"]) == len(whole.content)

    assert svc.cli(weir, "logs", run["id"], check=0).stdout == whole.text
    assert svc.cli(weir, "logs", run["id"], "--follow", check=0).stdout == whole.text
    expect_error(svc.admin.get("/v1/runs/no-such-run/logs"), 404)


def test_metrics_count_the_runs_by_state_and_the_queue(serve, weir, big_source, small):
    svc = serve("--max-concurrent-runs", "1", "--cancel-grace-s", GRACE_S)
    src, _, _ = big_source
    reader = expect(svc.admin.post("/v1/tokens", json={"name": "scraper", "role": "read"}), 201)
    read = svc.api(reader["token"])
    expect_error(svc.api(None).get("/metrics"), 401)

    mine = []  # every run this test submits: the whole history of this service

    def scrape():
        text = expect_text(read.get("/metrics"))
        runs = [get_run(svc.admin, run_id) for run_id in mine]
        for state in ("queued", "running", "succeeded", "failed", "cancelled", "lost"):
            assert metric(text, f'weir_runs{{state="{state}"}}') == sum(r["state"] == state for r in runs), (state, text)
        assert metric(text, "weir_queue_length") == sum(r["state"] == "queued" for r in runs)
        assert metric(text, "weir_runs_started_total") == sum(r["started_at"] is not None for r in runs)
        assert metric(text, "weir_rows_written_total") == sum(r["rows_out"] or 0 for r in runs if r["state"] == "succeeded")
        return text

    text = scrape()
    assert metric(text, 'weir_runs{state="succeeded"}') == 0 and metric(text, "weir_queue_length") == 0
    first = submit(svc.admin, {"definition": small_job("first")})
    mine.append(first["id"])
    assert wait_run(svc.admin, first["id"])["state"] == "succeeded"
    slow = submit(svc.admin, {"definition": slow_job(src), "workers": 1})
    mine.append(slow["id"])
    wait_run(svc.admin, slow["id"], {"running"})
    waiting = [submit(svc.admin, {"definition": small_job(f"waiting-{i}")}) for i in range(3)]
    mine.extend(run["id"] for run in waiting)
    text = scrape()
    assert metric(text, 'weir_runs{state="succeeded"}') == 1
    assert metric(text, 'weir_runs{state="running"}') == 1
    assert metric(text, "weir_queue_length") == 3
    assert metric(text, "weir_rows_written_total") == at_least(small, 0.5)

    expect(svc.admin.post(f"/v1/runs/{waiting[0]['id']}/cancel"), 200)
    text = scrape()
    assert metric(text, "weir_queue_length") == 2 and metric(text, 'weir_runs{state="cancelled"}') == 1
    svc.cli(weir, "cancel", slow["id"], check=0)
    for run in waiting[1:]:
        assert wait_run(svc.admin, run["id"])["state"] == "succeeded"
    assert wait_run(svc.admin, slow["id"])["state"] == "cancelled"
    text = scrape()
    assert metric(text, 'weir_runs{state="succeeded"}') == 3
    assert metric(text, 'weir_runs{state="cancelled"}') == 2
    assert metric(text, "weir_queue_length") == 0
    assert metric(text, "weir_rows_written_total") == 3 * at_least(small, 0.5)
    # Per job: runs that ended by state, and when the latest success finished.
    for run in [first, *waiting[1:]]:
        name = get_run(svc.admin, run["id"])["job"]
        assert metric(text, f'weir_job_runs_total{{job="{name}",state="succeeded"}}') == 1
        finished = parse_time(get_run(svc.admin, run["id"])["finished_at"])
        assert metric(text, f'weir_job_last_success_timestamp_seconds{{job="{name}"}}') == pytest.approx(finished.timestamp(), abs=0.001)
    assert metric(text, 'weir_job_runs_total{job="waiting-0",state="cancelled"}') == 1
    assert f'weir_job_last_success_timestamp_seconds{{job="waiting-0"}}' not in text
    assert metric(text, 'weir_job_runs_total{job="slow",state="cancelled"}') == 1

    # The shipped alert rules use only metrics the service serves, with the labels it gives.
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "weir-alerts.yaml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert len(exprs) == 3
    for expr in exprs:
        for name in re.findall(r"weir_[a-z_]+", expr):
            assert f"# TYPE {name} " in text, (name, expr)
    assert "weir_schedule_missed_total" in " ".join(exprs)
