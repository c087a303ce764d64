"""`weir worker --hostfile`: two processes started by hand form one cluster."""

import json
import os
import subprocess
import time

from conftest import WEIR_BIN, read_output, write_job
from helpers import CLEAN_JOB, assert_committed, assert_same_rows, clean_reference, free_port

# A hostfile process binds its own line's host:port and connects to the other lines' ports
# (engine/src/cluster.rs), so every port must be known before any process starts: port 0
# cannot be used here, unlike `weir run -p`, whose processes bind port 0 themselves and tell
# their launcher. The ports come from `free_port`, which releases each port before the
# processes bind it, so another program may take one in between: that process then exits
# with "Address already in use", and the whole cluster is started again on new ports. A
# cluster that never connected has not touched the output (the lease is taken after the
# processes connect), so starting again is safe.
START_ATTEMPTS = 3


def run_hostfile_cluster(job, directory, processes=2, workers=2, timeout=120):
    """Runs `job` as `processes` hostfile processes of `workers` workers on 127.0.0.1 and
    returns each process's (exit code, stdout, stderr); starts the cluster again on new ports
    when a process could not bind its port (see above)."""
    for attempt in range(START_ATTEMPTS):
        ports = []
        while len(ports) < processes:  # two port-0 binds in a row may get the same port
            port = free_port()
            if port not in ports:
                ports.append(port)
        hostfile = directory / f"hosts-{attempt}"
        hostfile.write_text("".join(f"127.0.0.1:{port}\n" for port in ports))
        logs = [(directory / f"process-{attempt}-{i}.out", directory / f"process-{attempt}-{i}.err") for i in range(processes)]
        procs = []
        try:
            for i, (out, err) in enumerate(logs):
                args = [WEIR_BIN, "worker", job, "--hostfile", hostfile, "--process", i, "--workers", workers, "--json"]
                with open(out, "w") as stdout, open(err, "w") as stderr:
                    procs.append(subprocess.Popen([str(a) for a in args], stdout=stdout, stderr=stderr))
            deadline = time.monotonic() + timeout
            while True:
                codes = [p.poll() for p in procs]
                results = [(code, out.read_text(), err.read_text()) for code, (out, err) in zip(codes, logs)]
                could_not_bind = any(
                    code not in (None, 0) and "cannot listen on" in stderr and "Address already in use" in stderr
                    for code, _, stderr in results
                )
                if could_not_bind or None not in codes:
                    break
                assert time.monotonic() < deadline, f"the hostfile processes did not finish in {timeout} s: {results}"
                time.sleep(0.05)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=30)
        if not could_not_bind:
            return results
    raise AssertionError(f"no start of {START_ATTEMPTS} could bind its ports; the last: {results}")


def test_two_hostfile_processes_run_one_job(tmp_path, events_dir):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", CLEAN_JOB.format(src=events_dir, out=out, mode="error_if_exists"))
    results = run_hostfile_cluster(job, tmp_path)
    assert [code for code, _, _ in results] == [0, 0], results
    summary = json.loads(results[0][1])
    want = clean_reference(events_dir)
    assert summary["rows_out"] == want.num_rows
    assert_same_rows(read_output(out), want)
    manifest = assert_committed(out, want.num_rows)
    assert manifest["cluster"] == {"processes": 2, "workers_per_process": 2}


def start_worker(job, hostfile, process, secret, directory, name, timeout_s="20", workers="1"):
    env = dict(os.environ, WEIR_CLUSTER_SECRET=secret, WEIR_CONNECT_TIMEOUT_S=timeout_s)
    out, err = directory / f"{name}.out", directory / f"{name}.err"
    args = [WEIR_BIN, "worker", job, "--hostfile", hostfile, "--process", process, "--workers", workers, "--json"]
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([str(a) for a in args], stdout=stdout, stderr=stderr, env=env)
    return proc, err


def two_process_cluster(tmp_path, events_dir):
    """A job and a hostfile of two processes on 127.0.0.1."""
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", CLEAN_JOB.format(src=events_dir, out=out, mode="error_if_exists"))
    ports = [free_port(), free_port()]
    hostfile = tmp_path / "hosts"
    hostfile.write_text("".join(f"127.0.0.1:{port}\n" for port in ports))
    return out, job, hostfile, ports


def test_a_process_with_the_wrong_secret_is_refused_and_the_run_goes_on(tmp_path, events_dir):
    out, job, hostfile, _ = two_process_cluster(tmp_path, events_dir)
    first, first_err = start_worker(job, hostfile, 0, "the-secret", tmp_path, "first")
    try:
        rogue, rogue_err = start_worker(job, hostfile, 1, "a-guess", tmp_path, "rogue")
        assert rogue.wait(timeout=60) != 0
        assert "process 0" in rogue_err.read_text() and "refused this one" in rogue_err.read_text(), rogue_err.read_text()
        assert first.poll() is None, "process 0 keeps waiting for a process 1 it can trust"
        second, _ = start_worker(job, hostfile, 1, "the-secret", tmp_path, "second")
        assert second.wait(timeout=120) == 0 and first.wait(timeout=120) == 0, first_err.read_text()
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
    assert "refused a connection to the cluster" in first_err.read_text() and "secret" in first_err.read_text()
    assert_committed(out, clean_reference(events_dir).num_rows)
    assert_same_rows(read_output(out), clean_reference(events_dir))


def test_a_process_with_another_worker_count_is_refused_by_name(tmp_path, events_dir):
    out, job, hostfile, _ = two_process_cluster(tmp_path, events_dir)
    first, first_err = start_worker(job, hostfile, 0, "s", tmp_path, "first")
    try:
        wide, wide_err = start_worker(job, hostfile, 1, "s", tmp_path, "wide", workers="3")
        assert wide.wait(timeout=60) != 0
        assert "refused this one" in wide_err.read_text() and "--workers" in wide_err.read_text(), wide_err.read_text()
        deadline = time.monotonic() + 10
        while "needs the same --workers" not in first_err.read_text():
            assert time.monotonic() < deadline, first_err.read_text()
            time.sleep(0.05)
        assert "it runs 3 worker(s), this process 1" in first_err.read_text()
        second, _ = start_worker(job, hostfile, 1, "s", tmp_path, "second")
        assert second.wait(timeout=120) == 0 and first.wait(timeout=120) == 0, first_err.read_text()
    finally:
        if first.poll() is None:
            first.kill()
    assert_committed(out, clean_reference(events_dir).num_rows)


def test_a_process_that_never_comes_is_named_within_the_deadline(tmp_path, events_dir):
    out, job, hostfile, ports = two_process_cluster(tmp_path, events_dir)
    started = time.monotonic()
    alone, err = start_worker(job, hostfile, 0, "s", tmp_path, "alone", timeout_s="3")
    assert alone.wait(timeout=60) == 1
    assert time.monotonic() - started < 30
    assert f"process 1 (127.0.0.1:{ports[1]}) did not connect within 3 s" in err.read_text(), err.read_text()
    assert not out.exists() or not (out / "_SUCCESS").exists()
