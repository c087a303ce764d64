"""The output commit protocol (v2) on S3 (a real Garage server on 127.0.0.1): concurrent
runs on one prefix, a loop of runs killed at random moments, the bucket-root and
foreign-object guards, and `weir ls --json`.

Outputs are checked with boto3 listings and pyarrow reading the listed objects (what a
reader that skips `_`-prefixed paths sees), against rows computed from the input with
pyarrow, never against values taken from Weir's own output.
"""

import io
import os
import random
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from garage import Garage
from helpers import (
    S3Prefix,
    SHAPES_2_AND_2X1,
    THRESHOLDS,
    Run,
    assert_rows,
    job_file,
    kill_loop,
    ls_json,
    reference,
    run_at_once,
    run_retrying,
    wait_no_processes,
    write_data,
)

ROWS = 600_000  # a `-w 2` run takes a second or two, so kills land mid-run




class S3Data:
    """The dataset, uploaded to a bucket, with its reference outputs."""

    def __init__(self, server: Garage, local: Path):
        self.bucket = server.new_bucket("safety-src")
        server.upload_dir(local, self.bucket, "data")
        self.uri = f"s3://{self.bucket}/data/"
        self.refs = {t: reference(local, t) for t in THRESHOLDS}


@pytest.fixture(scope="module")
def data(garage, tmp_path_factory):
    return S3Data(garage, write_data(tmp_path_factory.mktemp("s3data"), ROWS, seed=21))


def test_of_concurrent_runs_on_an_s3_prefix_exactly_one_commits(weir, tmp_path, garage, data):
    env = garage.env()
    out = S3Prefix(garage, garage.new_bucket("conc"))
    prev = job_file(tmp_path / "prev.toml", data.uri, out.uri, THRESHOLDS[1], batch=8192)
    weir("run", prev, "-w", "2", "--var", "run_id=before", env=env, check=0, timeout=300)
    job = job_file(tmp_path / "job.toml", data.uri, out.uri, THRESHOLDS[0])
    winner_id = run_at_once(job, tmp_path, "s", env=env)
    out.assert_clean_commit(data.refs[THRESHOLDS[0]], run_id=winner_id)
    uploads = garage.client().list_multipart_uploads(Bucket=out.bucket).get("Uploads", [])
    assert uploads == [], f"unfinished uploads left behind: {uploads}"
    opts = garage.storage_options()
    frame = pl.concat([pl.read_parquet(f"s3://{out.bucket}/{out.name}/{k}", storage_options=opts) for k in out.visible()])
    assert frame.height == data.refs[THRESHOLDS[0]].num_rows


def test_kill_loop_s3(weir, tmp_path, garage, data):
    env = garage.env()
    ttl = 2
    rng = random.Random(int(os.environ.get("WEIR_KILL_SEED", "20261201")))  # the moments and signals of the kills
    log = []
    out = S3Prefix(garage, garage.new_bucket("loop"))
    jobs = {t: job_file(tmp_path / f"job-{i}.toml", data.uri, out.uri, t, ttl=ttl) for i, t in enumerate(THRESHOLDS)}

    scratch_bucket = garage.new_bucket("scratch")
    shapes_time = {}
    for n, shape in enumerate(SHAPES_2_AND_2X1):
        scratch = job_file(tmp_path / f"scratch-{n}.toml", data.uri, f"s3://{scratch_bucket}/s{n}/", THRESHOLDS[0], ttl=ttl)
        began = time.time()
        weir("run", scratch, *shape, "--quiet", env=env, check=0, timeout=300)
        shapes_time[shape] = time.time() - began
    log.append(f"run times: {shapes_time}")

    state = {"committed": None, "run_id": None}

    def start_run(i, shape, threshold, run_id):
        return Run(jobs[threshold], *shape, "--var", f"run_id={run_id}", env=env, logs=tmp_path)

    def recover(threshold, run_id):
        proc = run_retrying(weir, "run", jobs[threshold], "-w", "2", "--var", f"run_id={run_id}r", env=env, timeout=20)
        assert proc.returncode == 0, proc.stderr + "\n" + "\n".join(log)
        out.assert_clean_commit(data.refs[threshold], run_id=f"{run_id}r")
        state["run_id"] = f"{run_id}r"
        return threshold

    def check_state(run_id, threshold, rc, entry, recover):
        assert wait_no_processes(str(tmp_path / "job-"), 10) == [], entry
        context = f"{entry}\nkeys: {out.keys()}\n" + "\n".join(log)
        if out.commit_decisions():
            log.append("  killed in the publish window: the next run must roll forward")
            state["committed"] = recover(threshold, run_id)
            return
        now = out.committed_run_id()
        if now == run_id:
            state["committed"], state["run_id"] = threshold, run_id
        assert rc != 0 or now == run_id, f"exit 0 but not committed: {context}"
        assert now == state["run_id"], f"the prefix holds neither the previous committed output ({state['run_id']}) nor this run's, and no commit.json to finish it (committed: {now}): {context}"
        if state["committed"] is None:
            assert out.visible() == [] and "_SUCCESS" not in out.keys(), context
        else:
            assert_rows(out.read_visible(), data.refs[state["committed"]], context)

    began = time.time()
    kill_loop(start_run, check_state, recover, out.attempt_probe, shapes_time, 12, ttl, rng, log)
    final = run_retrying(weir, "run", jobs[THRESHOLDS[0]], "-w", "2", "--var", "run_id=final", env=env, timeout=20)
    assert final.returncode == 0, final.stderr + "\n".join(log)
    out.assert_clean_commit(data.refs[THRESHOLDS[0]], run_id="final")
    print(f"s3 kill loop: {time.time() - began:.1f}s\n" + "\n".join(log))


def test_a_bucket_root_or_a_foreign_object_refuses_overwrite(weir, tmp_path, garage, data):
    env = garage.env()
    root_bucket = garage.new_bucket("root")
    client = garage.client()
    client.put_object(Bucket=root_bucket, Key="keep/me.txt", Body=b"precious")
    for uri in (f"s3://{root_bucket}/", f"s3://{root_bucket}"):
        proc = weir("run", job_file(tmp_path / "root.toml", data.uri, uri), "-w", "2", env=env, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert f"s3://{root_bucket}" in proc.stderr, proc.stderr
        assert garage.keys(root_bucket) == ["keep/me.txt"]

    out = S3Prefix(garage, garage.new_bucket("foreign"))
    weir("run", job_file(tmp_path / "b.toml", data.uri, out.uri, THRESHOLDS[1], batch=8192), "-w", "2", "--var", "run_id=prevS", env=env, check=0, timeout=300)
    client.put_object(Bucket=out.bucket, Key=f"{out.name}/notes.txt", Body=b"my notes")
    before = out.keys()
    job = job_file(tmp_path / "a.toml", data.uri, out.uri, THRESHOLDS[0], batch=8192)
    proc = weir("run", job, "-w", "2", "--var", "run_id=newS", env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "notes.txt" in proc.stderr and "not written by Weir" in proc.stderr, proc.stderr
    assert out.keys() == before and out.committed_run_id() == "prevS"

    weir("run", job, "-w", "2", "--var", "run_id=newS", "--force", env=env, check=0, timeout=300)
    assert out.get("notes.txt") == b"my notes"
    found = out.manifest()
    assert found["run_id"] == "newS"
    parts = sorted(entry["path"] for entry in found["files"])
    assert out.keys() == sorted(parts + ["_SUCCESS", "_weir/manifest.json", "notes.txt"])
    tables = [pq.read_table(io.BytesIO(out.get(p))) for p in parts]
    assert_rows(pa.concat_tables(tables), data.refs[THRESHOLDS[0]], "manifest files")


def test_ls_json_of_an_empty_s3_prefix(weir, garage):
    env = garage.env()
    out = S3Prefix(garage, garage.new_bucket("ls"))
    found = ls_json(weir, out.uri, env=env)
    assert found["status"] == "not_a_weir_output" and found["holder"] is None and found["files"] == [], found
    for extra in ((), ("--json",)):
        proc = weir("ls", out.uri, *extra, "--require-committed", env=env, timeout=60)
        assert proc.returncode == 3, f"weir ls {out.uri} {' '.join(extra)} --require-committed -> {proc.returncode}\n{proc.stdout}{proc.stderr}"


def test_ls_json_of_a_committed_s3_output(weir, tmp_path, garage, data):
    env = garage.env()
    out = S3Prefix(garage, garage.new_bucket("ls"))
    weir("run", job_file(tmp_path / "c.toml", data.uri, out.uri, THRESHOLDS[0], batch=8192), "-w", "2", "--var", "run_id=lsS", env=env, check=0, timeout=300)
    found = ls_json(weir, out.uri, env=env, check=0)
    assert found["status"] == "committed" and found["run_id"] == "lsS" and found["holder"] is None, found
    assert found["rows"] == out.read_visible().num_rows == data.refs[THRESHOLDS[0]].num_rows
    assert sorted(Path(f).name for f in found["files"]) == out.visible()
    assert weir("ls", out.uri, "--require-committed", env=env, timeout=60).returncode == 0
    assert weir("ls", out.uri, "--json", "--require-committed", env=env, timeout=60).returncode == 0
