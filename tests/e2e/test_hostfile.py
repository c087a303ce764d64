"""`weir worker --hostfile`: two processes started by hand form one cluster."""

import json
import socket
import subprocess

from conftest import WEIR_BIN, read_output, write_job
from test_local_jobs import CLEAN_JOB, assert_committed, assert_same_rows, clean_reference


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_hostfile_processes_run_one_job(tmp_path, events_dir):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", CLEAN_JOB.format(src=events_dir, out=out, mode="error_if_exists"))
    hostfile = tmp_path / "hosts"
    hostfile.write_text(f"127.0.0.1:{free_port()}\n127.0.0.1:{free_port()}\n")
    procs = [
        subprocess.Popen(
            [str(WEIR_BIN), "worker", str(job), "--hostfile", str(hostfile), "--process", str(i), "--workers", "2", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    summary = json.loads(outputs[0][0])
    want = clean_reference(events_dir)
    assert summary["rows_out"] == want.num_rows
    assert_same_rows(read_output(out), want)
    manifest = assert_committed(out, want.num_rows)
    assert manifest["cluster"] == {"processes": 2, "workers_per_process": 2}
