"""A run killed mid-way commits nothing, and an overwrite re-run commits a clean output."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import WEIR_BIN, data_files, read_inputs, read_output, write_job
from helpers import live_glob

JOB = """
name = "kill-me"

[source]
uri = "{src}"
batch_size = 256

[[step]]
op = "filter"
expr = "x >= 0.25"

[sink]
uri = "{out}"
mode = "overwrite"
row_group_rows = 4096
lease_ttl_s = 2
"""


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory):
    src = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(7)
    for index in range(4):
        rows = 600_000
        table = pa.table(
            {
                "id": np.arange(index * rows, (index + 1) * rows, dtype=np.int64),
                "x": rng.random(rows),
                "y": rng.normal(size=rows),
                "label": pa.array(rng.choice(np.array(["a", "b", "c"]), rows)),
            }
        )
        pq.write_table(table, src / f"f{index}.parquet", row_group_size=50_000)
    return src


def children_of(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def wait_for_progress(out, proc, timeout=60):
    """Waits until the run has staged part data (so a kill lands mid-way)."""
    deadline = time.time() + timeout
    runs = out / "_weir" / "runs"
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        if any(p.name.startswith("part-") for p in live_glob(runs, "*/*")):
            return True
        time.sleep(0.02)
    return False


def reference(src):
    table = read_inputs(src)
    return table.filter(pa.compute.greater_equal(table["x"], 0.25))


@pytest.mark.parametrize("kill", ["worker-process", "single-process-run"])
def test_killed_run_leaves_no_success_and_rerun_is_clean(weir, tmp_path, big_dir, kill):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", JOB.format(src=big_dir, out=out))
    shape = ["-p", "2", "-w", "1"] if kill == "worker-process" else ["-w", "2"]
    proc = subprocess.Popen([str(WEIR_BIN), "run", str(job), *shape, "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for_progress(out, proc), "the run finished or failed before it could be killed"
        if kill == "worker-process":
            victim = children_of(proc.pid)[1]
            os.kill(victim, signal.SIGKILL)
            _, stderr = proc.communicate(timeout=120)
            assert proc.returncode == 1, stderr
            assert "worker process" in stderr and "not committed" in stderr
        else:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=60)
            assert proc.returncode == -signal.SIGKILL
            # The killed run's lease (lease_ttl_s = 2) must expire before the next run may start.
            time.sleep(3)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (out / "_SUCCESS").exists()
    assert not (out / "_weir" / "manifest.json").exists()

    weir("run", job, *shape, check=0)
    manifest = json.loads((out / "_weir" / "manifest.json").read_text())
    assert sorted(f["path"] for f in manifest["files"]) == sorted(p.name for p in out.iterdir() if p.is_file() and p.name.startswith("part-"))
    assert not [p for p in out.rglob("*") if "#" in p.name], "no staged upload of the killed run is left"
    assert not (out / "_weir" / "runs").exists(), "the killed run's directory was removed"
    got = read_output(out).sort_by("id")
    want = reference(big_dir)
    assert got.num_rows == want.num_rows
    assert got["id"].to_pylist() == want["id"].to_pylist()
