"""The output commit protocol (v2) on local files: what an overwrite may delete, leases,
killed and concurrent runs, and `weir ls --json`.

Every check reads the output with an independent reader (pyarrow's dataset reader on the
output directory, Polars, plain filesystem walks) and compares it with rows computed from
the input with pyarrow, never with values taken from Weir's own output. Tests that SIGKILL
a run use a small `lease_ttl_s` so the dead run's lease expires quickly.

The job, the data, their reference, the background runs and the kill loop shared with
test_output_safety_s3.py are in helpers.py.
"""

import json
import os
import random
import signal
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import write_job
from helpers import (
    HELD,
    SHAPES_2_AND_2X1,
    THRESHOLDS,
    Run,
    assert_rows,
    attempt_files,
    children_of,
    committed_run_id,
    hidden,
    job_file,
    kill_loop,
    live_glob,
    ls_json,
    manifest,
    read_dir,
    reference,
    run_at_once,
    run_retrying,
    wait_gone,
    wait_no_processes,
    write_data,
)

# Rows of the dataset the long runs read (in batches of 32 rows): big enough that a `-w 2`
# run of the debug binary takes a second or two (so kills land mid-run), small enough to keep
# the file quick.
BIG_ROWS = 800_000
# Enough rows that each of two workers' part files outgrows one 8 MiB upload part, so a
# staged part is seen while it is still being written (`name#N`) in every run.
LARGE_ROWS = 2_400_000
SMALL_ROWS = 20_000


# ---------------------------------------------------------------------------------------
# data and references


class Dataset:
    def __init__(self, path: Path):
        self.path = path
        self.refs = {t: reference(path, t) for t in THRESHOLDS}


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    return Dataset(write_data(tmp_path_factory.mktemp("big"), BIG_ROWS, seed=11))


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    return Dataset(write_data(tmp_path_factory.mktemp("large"), LARGE_ROWS, seed=13, row_group=100_000))


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return Dataset(write_data(tmp_path_factory.mktemp("small"), SMALL_ROWS, seed=12, row_group=5_000))


def assert_frame_rows(frame: pl.DataFrame, want: pa.Table, what: str = "polars"):
    assert frame.height == want.num_rows, f"{what}: {frame.height} rows, expected {want.num_rows}"
    frame = frame.sort("id")
    for name in want.column_names:
        if name == "label":
            got = pc.cast(frame[name].to_arrow(), pa.string())
            assert got.equals(want[name].combine_chunks()), f"{what}: column {name} differs"
        else:
            assert np.array_equal(frame[name].to_numpy(), want[name].to_numpy()), f"{what}: column {name} differs"


# ---------------------------------------------------------------------------------------
# the output directory, seen from outside


def visible_files(prefix: Path) -> list:
    if not prefix.exists():
        return []
    return sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if (p.is_file() or p.is_symlink()) and not hidden(p.relative_to(prefix)))


def all_files(prefix: Path) -> list:
    return sorted(str(p.relative_to(prefix)) for p in prefix.rglob("*") if p.is_file() or p.is_symlink())


def snapshot(root: Path) -> dict:
    """Every file under `root` (symlinks not followed) with its bytes, or ("link", target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            out[rel] = ("link", os.readlink(path)) if path.is_symlink() else path.read_bytes()
    return out


def read_manifest_files(prefix: Path) -> pa.Table:
    tables = [pq.read_table(prefix / entry["path"]) for entry in manifest(prefix)["files"]]
    return pa.concat_tables(tables)


def runs_leftovers(prefix: Path) -> list:
    runs = prefix / "_weir" / "runs"
    return sorted(str(p.relative_to(prefix)) for p in runs.rglob("*")) if runs.exists() else []


def claims(prefix: Path) -> list:
    return live_glob(prefix / "_weir" / "runs", "*/claim.json")


def attempt_probe(prefix: Path, run_id: str, target: str) -> bool:
    """Whether the attempt of `run_id` has staged part files ("staged": the run is about to
    commit) or written its commit decision ("decided": it is publishing)."""
    try:
        attempts = [e.path for e in os.scandir(prefix / "_weir" / "runs") if e.name.startswith(run_id + ".")]
    except FileNotFoundError:
        return False
    for attempt in attempts:
        try:
            names = os.listdir(attempt)
        except FileNotFoundError:
            continue
        if "commit.json" in names or (target == "staged" and any(n not in ("claim.json", "heartbeat") for n in names)):
            return True
    return False


def commit_decisions(prefix: Path) -> list:
    return live_glob(prefix / "_weir" / "runs", "*/commit.json")


def assert_clean_commit(prefix: Path, want: pa.Table, run_id=None):
    """The prefix holds exactly a committed output equal to `want`, and nothing else of Weir's."""
    found = manifest(prefix)
    assert found is not None and (prefix / "_SUCCESS").exists(), f"not committed: {all_files(prefix)}"
    if run_id is not None:
        assert found["run_id"] == run_id
    parts = sorted(entry["path"] for entry in found["files"])
    assert all_files(prefix) == sorted(parts + ["_SUCCESS", "_weir/manifest.json"]), all_files(prefix)
    assert runs_leftovers(prefix) == [], runs_leftovers(prefix)
    assert_rows(read_dir(prefix), want, "pyarrow directory read")


# ---------------------------------------------------------------------------------------
# processes


def wait_until(predicate, proc: Run, timeout=60.0) -> bool:
    """Polls `predicate` until it holds; False when the run ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.proc.poll() is not None:
            return predicate()
        time.sleep(0.01)
    return False


def wait_mid_run(prefix: Path, run: "Run", pause=0.4) -> bool:
    """Waits until the run has claimed the prefix, then a little longer, so that a kill lands
    while it reads, filters and writes (a worker's staged part file only shows up under the
    attempt when the worker finishes, just before the commit, so the claim is the sign to wait
    for). False when the run ended, or began to commit, first."""
    if not wait_until(lambda: claims(prefix), run):
        return False
    time.sleep(pause)
    return run.proc.poll() is None and not commit_decisions(prefix)


# ---------------------------------------------------------------------------------------
# What an overwrite may touch


@pytest.mark.parametrize("shape", ["link-to-source", "link-into-source", "below-a-link-to-source"])
def test_a_sink_reaching_the_source_through_a_symlink_is_refused(weir, tmp_path, shape):
    src = write_data(tmp_path / "src", 4_000, seed=1, files=2, row_group=1_000)
    write_data(src / "nested", 1_000, seed=2, files=1, row_group=500)
    (src / "_SUCCESS").write_text("")
    if shape == "link-to-source":
        (tmp_path / "link").symlink_to(src, target_is_directory=True)
        sink = tmp_path / "link"
    elif shape == "link-into-source":
        (tmp_path / "link").symlink_to(src / "nested", target_is_directory=True)
        sink = tmp_path / "link"
    else:
        (tmp_path / "link").symlink_to(src, target_is_directory=True)
        sink = tmp_path / "link" / "out"
    before = snapshot(src)
    job = job_file(tmp_path / "jobs" / "job.toml", src, sink)
    proc = weir("run", job, "-w", "2", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "overlap" in proc.stderr.lower(), proc.stderr
    after = snapshot(src)
    assert sorted(after) == sorted(before), "the source's files changed"
    for rel, content in before.items():
        assert after[rel] == content, f"{rel} changed"


def test_overwrite_never_follows_a_symlink_inside_the_output(weir, tmp_path, small):
    out = tmp_path / "out"
    weir("run", job_file(tmp_path / "b.toml", small.path, out, THRESHOLDS[1]), "-w", "2", "--var", "run_id=prev2", check=0, timeout=120)
    sacrificial = tmp_path / "sacrificial"
    (sacrificial / "sub").mkdir(parents=True)
    (sacrificial / "precious.txt").write_text("do not delete")
    (sacrificial / "sub" / "deep.bin").write_bytes(os.urandom(1000))
    first_part = out / manifest(out)["files"][0]["path"]
    # A file named like a part of the committed output, in case a delete resolves the link.
    (sacrificial / first_part.name).write_bytes(first_part.read_bytes())
    (sacrificial / "part-00000-new2.parquet").write_bytes(first_part.read_bytes())
    keep = snapshot(sacrificial)
    (out / "victim").symlink_to(sacrificial, target_is_directory=True)
    before = snapshot(out)

    job = job_file(tmp_path / "a.toml", small.path, out, THRESHOLDS[0])
    refused = weir("run", job, "-w", "2", "--var", "run_id=new2", timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "victim" in refused.stderr and "not written by Weir" in refused.stderr, refused.stderr
    assert snapshot(sacrificial) == keep
    assert snapshot(out) == before, "a refused overwrite changed the output"

    weir("run", job, "-w", "2", "--var", "run_id=new2", "--force", check=0, timeout=120)
    assert snapshot(sacrificial) == keep, "the overwrite deleted or changed files through the symlink"
    assert (out / "victim").is_symlink() and os.readlink(out / "victim") == str(sacrificial)
    assert manifest(out)["run_id"] == "new2"
    assert_rows(read_manifest_files(out), small.refs[THRESHOLDS[0]], "manifest files")
    top_level_parts = sorted(p.name for p in out.iterdir() if p.name.endswith(".parquet"))
    assert top_level_parts == sorted(entry["path"] for entry in manifest(out)["files"])


def test_a_recorded_part_replaced_by_a_symlink_is_not_followed(weir, tmp_path, small):
    out = tmp_path / "out"
    weir("run", job_file(tmp_path / "b.toml", small.path, out, THRESHOLDS[1]), "-w", "2", "--var", "run_id=prevL", check=0, timeout=120)
    sacrificial = tmp_path / "sacrificial"
    sacrificial.mkdir()
    recorded = out / manifest(out)["files"][0]["path"]
    target = sacrificial / "precious.parquet"
    target.write_bytes(recorded.read_bytes())
    keep = snapshot(sacrificial)
    recorded.unlink()
    recorded.symlink_to(target)

    job = job_file(tmp_path / "a.toml", small.path, out, THRESHOLDS[0])
    proc = weir("run", job, "-w", "2", "--var", "run_id=newL", timeout=120)
    if proc.returncode == 2:  # a guard may refuse the link; forced, it still must not follow it
        proc = weir("run", job, "-w", "2", "--var", "run_id=newL", "--force", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert snapshot(sacrificial) == keep, "deleting the recorded path followed the symlink"
    assert manifest(out)["run_id"] == "newL"
    assert_rows(read_manifest_files(out), small.refs[THRESHOLDS[0]], "manifest files")


def test_overwriting_the_home_directory_is_refused(weir, tmp_path, small):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".config" / "app").mkdir(parents=True)
    (home / ".bashrc").write_text("export PS1='$ '\n")
    (home / ".ssh" / "id_ed25519").write_bytes(os.urandom(400))
    (home / ".config" / "app" / "settings.json").write_text('{"a": 1}')
    before = snapshot(home)
    job = job_file(tmp_path / "jobs" / "job.toml", small.path, home)
    proc = weir("run", job, "-w", "2", env=dict(os.environ, HOME=str(home)), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert str(home) in proc.stderr, proc.stderr
    assert snapshot(home) == before


@pytest.mark.parametrize("case", ["ancestor-of-source", "the-source", "cwd", "parent-of-cwd", "ancestor-of-job-file"])
def test_overwriting_an_ancestor_of_what_the_run_uses_is_refused(weir, tmp_path, small, case):
    sink = tmp_path / "sink"
    sink.mkdir()
    (sink / ".keep").write_text("hidden, so only the guard under test can refuse")
    src, job_path, cwd = small.path, tmp_path / "jobs" / "job.toml", None
    if case == "ancestor-of-source":
        src = write_data(sink / "_data" / "src", 2_000, seed=3, files=1, row_group=500)
    elif case == "the-source":
        src = write_data(sink, 2_000, seed=3, files=1, row_group=500)
    elif case == "cwd":
        cwd = sink
    elif case == "parent-of-cwd":
        cwd = sink / "work"
        cwd.mkdir()
        (cwd / ".history").write_text("ls\n")
    else:
        job_path = sink / "_jobs" / "job.toml"
    job = job_file(job_path, src, sink)
    before = snapshot(sink)
    proc = weir("run", job, "-w", "2", cwd=cwd, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert str(sink) in proc.stderr or "overlap" in proc.stderr.lower(), proc.stderr
    assert snapshot(sink) == before


def test_a_foreign_file_in_the_prefix_refuses_overwrite_unless_forced_and_survives(weir, tmp_path, small):
    # A prefix holding only somebody's notes.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "notes.txt").write_text("my notes\n")
    proc = weir("run", job_file(tmp_path / "fresh.toml", small.path, fresh), "-w", "2", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "notes.txt" in proc.stderr and "not written by Weir" in proc.stderr, proc.stderr
    assert all_files(fresh) == ["notes.txt"] and (fresh / "notes.txt").read_text() == "my notes\n"

    # A committed output with notes added next to it.
    out = tmp_path / "out"
    weir("run", job_file(tmp_path / "b.toml", small.path, out, THRESHOLDS[1]), "-w", "2", "--var", "run_id=prevF", check=0, timeout=120)
    (out / "notes.txt").write_text("my notes\n")
    before = snapshot(out)
    job = job_file(tmp_path / "a.toml", small.path, out, THRESHOLDS[0])
    proc = weir("run", job, "-w", "2", "--var", "run_id=newF", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "notes.txt" in proc.stderr and "not written by Weir" in proc.stderr, proc.stderr
    assert snapshot(out) == before
    assert_rows(read_manifest_files(out), small.refs[THRESHOLDS[1]], "previous output after the refusal")

    weir("run", job, "-w", "2", "--var", "run_id=newF", "--force", check=0, timeout=120)
    assert (out / "notes.txt").read_text() == "my notes\n"
    found = manifest(out)
    assert found["run_id"] == "newF" and (out / "_SUCCESS").exists()
    assert_rows(read_manifest_files(out), small.refs[THRESHOLDS[0]], "manifest files")
    parts = sorted(entry["path"] for entry in found["files"])
    assert all_files(out) == sorted(parts + ["_SUCCESS", "_weir/manifest.json", "notes.txt"])


# ---------------------------------------------------------------------------------------
# Run ids


def test_a_refused_run_whose_id_is_a_substring_deletes_nothing(weir, tmp_path, small):
    out = tmp_path / "out"
    job = job_file(tmp_path / "job.toml", small.path, out, mode="error_if_exists")
    weir("run", job, "-w", "2", "--var", "run_id=T10", check=0, timeout=120)
    before = snapshot(out)
    assert any(name.endswith(".parquet") for name in before) and "_SUCCESS" in before and "_weir/manifest.json" in before

    proc = weir("run", job, "-p", "2", "-w", "1", "--var", "run_id=T1", timeout=120)
    assert proc.returncode == 2, proc.stderr
    after = snapshot(out)
    assert sorted(after) == sorted(before), f"files changed: {sorted(set(before) ^ set(after))}"
    for rel, content in before.items():
        assert after[rel] == content, f"{rel} changed"
    assert_rows(read_dir(out), small.refs[THRESHOLDS[0]], "pyarrow directory read")
    assert_rows(read_manifest_files(out), small.refs[THRESHOLDS[0]], "manifest files")


@pytest.mark.parametrize("run_id", ["../x", "a/b", "", ".", "..", "x/../../y"])
def test_a_run_id_that_is_not_a_plain_name_is_refused(weir, tmp_path, small, run_id):
    sink = tmp_path / "sinks" / "out"
    job = job_file(tmp_path / "job.toml", small.path, sink)
    proc = weir("run", job, "-w", "2", "--var", f"run_id={run_id}", timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert all_files(tmp_path) == ["job.toml"], all_files(tmp_path)
    assert not sink.exists() or not any(sink.rglob("*"))


# ---------------------------------------------------------------------------------------
# Concurrent runs


def test_of_concurrent_runs_on_one_prefix_exactly_one_commits(weir, tmp_path, big):
    out = tmp_path / "out"
    weir("run", job_file(tmp_path / "b.toml", big.path, out, THRESHOLDS[1], batch=8192), "-w", "2", "--var", "run_id=before", check=0, timeout=180)
    job = job_file(tmp_path / "job.toml", big.path, out, THRESHOLDS[0])
    winner_id = run_at_once(job, tmp_path, "c")
    assert_clean_commit(out, big.refs[THRESHOLDS[0]], run_id=winner_id)
    frame = pl.read_parquet(str(out / "*.parquet"))
    assert frame.height == big.refs[THRESHOLDS[0]].num_rows


# ---------------------------------------------------------------------------------------
# Killed runs


def commit_previous(weir, tmp_path: Path, data: Dataset) -> Path:
    """An output prefix holding a committed output of `data` at THRESHOLDS[1] (run id `prev`)."""
    out = tmp_path / "out"
    weir("run", job_file(tmp_path / "prev.toml", data.path, out, THRESHOLDS[1], batch=8192), "-w", "2", "--var", "run_id=prev", check=0, timeout=180)
    assert committed_run_id(out) == "prev"
    return out


@pytest.fixture
def committed(weir, tmp_path, big):
    return commit_previous(weir, tmp_path, big)


@pytest.fixture
def committed_large(weir, tmp_path, large):
    return commit_previous(weir, tmp_path, large)


def test_sigkill_of_the_launcher_stops_its_children_and_commits_nothing(weir, tmp_path, big, committed):
    out = committed
    job = job_file(tmp_path / "job.toml", big.path, out, THRESHOLDS[0], ttl=2)
    run = Run(job, "-p", "2", "-w", "1", "--var", "run_id=killedL")
    try:
        assert wait_mid_run(out, run), "the run ended before it could be killed mid-way: " + run.describe()
        kids = children_of(run.pid)
        assert len(kids) == 2, kids
        os.kill(run.pid, signal.SIGKILL)
        assert run.wait(timeout=30) == -signal.SIGKILL
        assert wait_gone(kids, 10) == [], "children of the killed launcher are still running"
        assert wait_no_processes(str(job), 10) == []
    finally:
        run.kill()
    deadline = time.time() + 5
    while time.time() < deadline:
        assert committed_run_id(out) == "prev", "the killed run committed"
        time.sleep(0.1)
    assert_rows(read_dir(out), big.refs[THRESHOLDS[1]], "previous output after the kill")

    # Once the dead run's lease expires, the next run takes over and cleans up after it.
    proc = run_retrying(weir, "run", job, "-w", "2", "--var", "run_id=afterL", timeout=15)
    assert proc.returncode == 0, proc.stderr
    assert_clean_commit(out, big.refs[THRESHOLDS[0]], run_id="afterL")


def test_sigint_of_the_launcher_exits_130_and_releases_the_prefix(weir, tmp_path, big, committed):
    out = committed
    job = job_file(tmp_path / "job.toml", big.path, out, THRESHOLDS[0])  # default ttl: only a release frees it
    run = Run(job, "-p", "2", "-w", "1", "--var", "run_id=intL")
    try:
        assert wait_mid_run(out, run), "the run ended before it could be killed mid-way: " + run.describe()
        kids = children_of(run.pid)
        assert len(kids) == 2, kids
        os.kill(run.pid, signal.SIGINT)
        assert run.wait(timeout=60) == 130, run.describe()
        assert wait_gone(kids, 10) == [], "children of the interrupted launcher are still running"
    finally:
        run.kill()
    assert runs_leftovers(out) == []
    assert committed_run_id(out) == "prev"
    assert_rows(read_dir(out), big.refs[THRESHOLDS[1]], "previous output after SIGINT")
    proc = weir("run", job, "-w", "2", "--var", "run_id=afterI", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert_clean_commit(out, big.refs[THRESHOLDS[0]], run_id="afterI")


def test_sigterm_of_a_single_process_run_exits_143_and_releases_the_prefix(weir, tmp_path, big, committed):
    out = committed
    job = job_file(tmp_path / "job.toml", big.path, out, THRESHOLDS[0])
    run = Run(job, "-w", "2", "--var", "run_id=termS")
    try:
        assert wait_mid_run(out, run), "the run ended before it could be killed mid-way: " + run.describe()
        os.kill(run.pid, signal.SIGTERM)
        assert run.wait(timeout=60) == 143, run.describe()
    finally:
        run.kill()
    assert runs_leftovers(out) == []
    assert committed_run_id(out) == "prev"
    assert_rows(read_dir(out), big.refs[THRESHOLDS[1]], "previous output after SIGTERM")
    proc = weir("run", job, "-w", "2", "--var", "run_id=afterT", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert_clean_commit(out, big.refs[THRESHOLDS[0]], run_id="afterT")


def test_sigkill_of_a_single_process_run_holds_the_prefix_until_its_lease_expires(weir, tmp_path, big, committed):
    out = committed
    job = job_file(tmp_path / "job.toml", big.path, out, THRESHOLDS[0], ttl=2)
    run = Run(job, "-w", "2", "--var", "run_id=killedS")
    try:
        assert wait_mid_run(out, run), "the run ended before it could be killed mid-way: " + run.describe()
        os.kill(run.pid, signal.SIGKILL)
        killed_at = time.time()
        assert run.wait(timeout=30) == -signal.SIGKILL
    finally:
        run.kill()
    held = weir("run", job, "-w", "2", "--var", "run_id=tooSoon", timeout=60)
    if held.returncode != 2 and time.time() - killed_at >= 1.5:
        pytest.fail(f"the test was too slow to try within the lease ({time.time() - killed_at:.2f}s)")
    assert held.returncode == 2, held.stderr
    assert HELD in held.stderr and "killedS" in held.stderr, held.stderr

    assert committed_run_id(out) == "prev"
    assert_rows(read_dir(out), big.refs[THRESHOLDS[1]], "pyarrow directory read after SIGKILL")
    assert_frame_rows(pl.scan_parquet(str(out) + "/*.parquet").collect(), big.refs[THRESHOLDS[1]], "polars scan after SIGKILL")

    time.sleep(max(0.0, killed_at + 3.5 - time.time()))
    proc = weir("run", job, "-w", "2", "--var", "run_id=afterK", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert_clean_commit(out, big.refs[THRESHOLDS[0]], run_id="afterK")


def claim_pid(prefix: Path, run_id: str):
    for claim in live_glob(prefix / "_weir" / "runs", f"{run_id}.*/claim.json"):
        try:
            return json.loads(claim.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            pass
    return None


def cmdline_of(pid: int) -> bytes:
    """A process's command line; empty once it has exited (it may, between listing and reading)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# The moments of the publish window a kill lands in: a failpoint holds the leader there
# (`FAILPOINTS`, compiled into the test build), and the test waits until the output shows
# that moment, so every kill lands where it is meant to.
PUBLISH_MOMENTS = [
    ("commit-decided", "the decision is written, nothing published yet"),
    ("publish-old-deleted", "the previous output's part files are deleted, the new ones not moved"),
    ("publish-parts-moved", "the new part files are in place, the manifest not yet written"),
]


def at_publish_moment(out: Path, run_id: str, previous_run: str, moment: str) -> bool:
    """Whether the output shows that the run holding `run_id`'s lease reached `moment`."""
    if "commit.json" not in attempt_files(out, run_id):
        return False
    names = [p.name for p in out.glob("part-*.parquet")]
    if moment == "publish-old-deleted":
        return not any(n.endswith(f"-{previous_run}.parquet") for n in names)
    if moment == "publish-parts-moved":
        return any(n.endswith(f"-{run_id}.parquet") for n in names)
    return True


@pytest.mark.parametrize("victim", ["single-process", "launcher", "lease-holding-worker"])
def test_a_sigkill_in_the_publish_window_leaves_a_commit_to_roll_forward(weir, tmp_path, big, victim):
    """SIGKILL at each moment of the publish window (held there by a failpoint): the prefix
    is then the previous output, the new one, or mid-publish with commit.json left for the
    next run to finish. Each kill is followed by a run that must commit cleanly."""
    out = tmp_path / "out"
    # Eight part files to replace, so that publishing takes a few more file operations.
    prev = job_file(tmp_path / "prev.toml", big.path, out, THRESHOLDS[1], batch=8192)
    weir("run", prev, "-w", "8", "--var", "run_id=prev", check=0, timeout=180)
    assert len(manifest(out)["files"]) >= 4
    shape = ["-w", "2"] if victim == "single-process" else ["-p", "2", "-w", "1"]
    previous = (THRESHOLDS[1], "prev")
    for attempt, (moment, what) in enumerate(PUBLISH_MOMENTS):
        threshold = THRESHOLDS[attempt % 2]
        run_id = f"pw{attempt}"
        job = job_file(tmp_path / f"job-{attempt}.toml", big.path, out, threshold, ttl=2)
        env = {**os.environ, "FAILPOINTS": f"{moment}=sleep(3000)"}
        run = Run(job, *shape, "--var", f"run_id={run_id}", env=env)
        kids, target = [], None
        try:
            while run.proc.poll() is None and not at_publish_moment(out, run_id, previous[1], moment):
                if "-p" in shape and len(kids) < 2:
                    kids = children_of(run.pid)
                time.sleep(0.001)
            assert run.proc.poll() is None, f"the run ended before {what}: " + run.describe()
            if "-p" in shape and len(kids) < 2:
                kids = children_of(run.pid)
            if victim == "lease-holding-worker":
                holder = claim_pid(out, run_id)
                target = holder if holder in kids else next((k for k in kids if b"--process\x000\x00" in cmdline_of(k)), None)
            else:
                target = run.pid
            assert target is not None, f"no {victim} to kill: " + run.describe()
            os.kill(target, signal.SIGKILL)
            rc = run.wait(timeout=60)
            assert wait_gone(kids, 10) == [], "processes of the run outlived it"
            assert wait_no_processes(str(job), 10) == []
        finally:
            run.kill()
        state = f"{victim} killed when {what} ({run_id}, exit {rc}); files: {all_files(out)}\n{run.stderr}"
        now = committed_run_id(out)
        if commit_decisions(out):
            pass  # mid-publish: the next run must roll the commit forward (checked below)
        elif now == run_id:
            assert_rows(read_dir(out), big.refs[threshold], state)
        else:
            assert now == previous[1], "neither the previous output, nor the new one, nor a commit.json to finish it: " + state
            assert_rows(read_dir(out), big.refs[previous[0]], state)
        # The next run finishes (or discards) what the killed one left and commits cleanly;
        # with eight part files again, for the next kill.
        after_id = f"after{attempt}"
        after = run_retrying(weir, "run", job_file(tmp_path / "after.toml", big.path, out, THRESHOLDS[1], batch=8192), "-w", "8", "--var", f"run_id={after_id}", timeout=20)
        assert after.returncode == 0, after.stderr + "\n" + state
        assert_clean_commit(out, big.refs[THRESHOLDS[1]], run_id=after_id)
        previous = (THRESHOLDS[1], after_id)


COPY_JOB = """
name = "output-safety"
[source]
uri = "{src}"
[sink]
uri = "{out}"
mode = "overwrite"
compression = "snappy"
"""


@pytest.mark.parametrize("shape", ["single-process", "launcher"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("kind", ["filter", "copy"])
def test_a_signal_while_part_files_are_still_written_commits_nothing(weir, tmp_path, large, committed_large, shape, sig, kind):
    """SIGTERM/SIGINT to `weir run` while a worker is still writing its staged part file
    (held there for 3 s by a failpoint): the run exits 143/130 and commits nothing.
    `copy`: a job of no steps into snappy part files, which splices in every column chunk
    of the (snappy) source instead of encoding it (connectors/src/chunk_copy.rs)."""
    out = committed_large
    args = ["-w", "2"] if shape == "single-process" else ["-p", "2", "-w", "1"]
    expected = {"SIGTERM": 143, "SIGINT": 130}[sig]
    refs = {**large.refs, None: reference(large.path, 0.0)}  # None: every row (x >= 0)
    previous = (THRESHOLDS[1], "prev")
    threshold = THRESHOLDS[0] if kind == "filter" else None
    if kind == "filter":
        job = job_file(tmp_path / "job.toml", large.path, out, threshold)
    else:
        job = write_job(tmp_path / "job.toml", COPY_JOB.format(src=large.path, out=out))
    # A failpoint holds a worker for 3 s after its tenth batch went into its part file, by
    # when its upload has begun: the signal lands while the part is being written.
    env = {**os.environ, "FAILPOINTS": "part-batch-written=10*off->1*sleep(3000)"}
    run = Run(job, *args, "--var", "run_id=sig", env=env)
    kids, at_signal = [], []
    try:
        while run.proc.poll() is None:
            if "-p" in args and len(kids) < 2:
                kids = children_of(run.pid)
            names = attempt_files(out, "sig")
            # A staged part still being uploaded (object_store's `name#N` temp file).
            if "commit.json" not in names and any("staged" in n and "#" in n for n in names):
                os.kill(run.pid, getattr(signal, sig))
                at_signal = names
                break
            time.sleep(0.001)
        rc = run.wait(timeout=60)
        assert wait_gone(kids, 10) == [], "processes of the run outlived it"
    finally:
        run.kill()
    state = f"{sig} to {shape} while {sorted(at_signal)} -> exit {rc}; files: {all_files(out)}\n{run.stderr}"
    assert at_signal, "the run ended before a part file was seen being written: " + state
    assert rc == expected, state
    assert committed_run_id(out) == previous[1], "a cancelled run committed: " + state
    assert runs_leftovers(out) == [], state
    assert_rows(read_dir(out), refs[previous[0]], state)
    proc = weir("run", job, "-w", "2", "--var", "run_id=afterSig", timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert_clean_commit(out, refs[threshold], run_id="afterSig")


# ---------------------------------------------------------------------------------------
# Runs killed at random moments


def test_kill_loop_local(weir, tmp_path, big):
    ttl = 2
    rng = random.Random(int(os.environ.get("WEIR_KILL_SEED", "20261130")))  # the moments and signals of the kills
    log = []
    jobs = {t: job_file(tmp_path / f"job-{i}.toml", big.path, tmp_path / "out", t, ttl=ttl) for i, t in enumerate(THRESHOLDS)}
    out = tmp_path / "out"

    # How long a run takes, per shape, on a scratch prefix.
    shapes_time = {}
    for n, shape in enumerate(SHAPES_2_AND_2X1):
        scratch = job_file(tmp_path / f"scratch-{n}.toml", big.path, tmp_path / f"scratch-{n}", THRESHOLDS[0], ttl=ttl)
        began = time.time()
        weir("run", scratch, *shape, "--quiet", check=0, timeout=180)
        shapes_time[shape] = time.time() - began
    log.append(f"run times: {shapes_time}")

    # The threshold and run id of the committed output (None before the first commit).
    state = {"committed": None, "run_id": None}

    def start_run(i, shape, threshold, run_id):
        return Run(jobs[threshold], *shape, "--var", f"run_id={run_id}", logs=tmp_path)

    def recover(threshold, run_id):
        proc = run_retrying(weir, "run", jobs[threshold], "-w", "2", "--var", f"run_id={run_id}r", timeout=20)
        assert proc.returncode == 0, proc.stderr + "\n" + "\n".join(log)
        assert_clean_commit(out, big.refs[threshold], run_id=f"{run_id}r")
        state["run_id"] = f"{run_id}r"
        return threshold

    def check_state(run_id, threshold, rc, entry, recover):
        assert wait_no_processes(str(tmp_path / "job-"), 10) == [], entry
        context = f"{entry}\nfiles: {all_files(out) if out.exists() else None}\n" + "\n".join(log)
        if commit_decisions(out):
            log.append("  killed in the publish window: the next run must roll forward")
            state["committed"] = recover(threshold, run_id)
            return
        now = committed_run_id(out)
        if now == run_id:
            state["committed"], state["run_id"] = threshold, run_id
        assert rc != 0 or now == run_id, f"exit 0 but not committed: {context}"
        assert now == state["run_id"], f"the prefix holds neither the previous committed output ({state['run_id']}) nor this run's, and no commit.json to finish it (committed: {now}): {context}"
        if state["committed"] is None:
            assert visible_files(out) == [], context
            assert not (out / "_SUCCESS").exists(), context
        else:
            assert (out / "_SUCCESS").exists(), context
            assert_rows(read_dir(out), big.refs[state["committed"]], context)

    began = time.time()
    kill_loop(start_run, check_state, recover, lambda run_id, target: attempt_probe(out, run_id, target), shapes_time, 20, ttl, rng, log)
    final = run_retrying(weir, "run", jobs[THRESHOLDS[0]], "-w", "2", "--var", "run_id=final", timeout=20)
    assert final.returncode == 0, final.stderr + "\n".join(log)
    assert_clean_commit(out, big.refs[THRESHOLDS[0]], run_id="final")
    print(f"kill loop: {time.time() - began:.1f}s\n" + "\n".join(log))


# ---------------------------------------------------------------------------------------
# weir ls --json


def test_ls_json_of_a_missing_or_foreign_prefix(weir, tmp_path):
    missing = tmp_path / "missing"
    found = ls_json(weir, missing)
    assert found["status"] == "not_a_weir_output" and found["run_id"] is None and found["holder"] is None, found
    assert found["files"] == [] and found["rows"] is None, found
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    assert ls_json(weir, foreign)["status"] == "not_a_weir_output"
    for uri in (missing, foreign):
        for extra in ((), ("--json",)):
            proc = weir("ls", uri, *extra, "--require-committed", timeout=60)
            assert proc.returncode == 3, f"weir ls {uri} {' '.join(extra)} --require-committed -> {proc.returncode}\n{proc.stdout}{proc.stderr}"


@pytest.fixture
def committed_small(weir, tmp_path, small):
    out = tmp_path / "out"
    weir("run", job_file(tmp_path / "c.toml", small.path, out, THRESHOLDS[0]), "-w", "2", "--var", "run_id=lsC", check=0, timeout=120)
    return out


def test_ls_json_of_a_committed_output(weir, small, committed_small):
    out = committed_small
    found = ls_json(weir, out, check=0)
    assert found["status"] == "committed" and found["run_id"] == "lsC" and found["holder"] is None, found
    assert found["rows"] == read_dir(out).num_rows == small.refs[THRESHOLDS[0]].num_rows
    assert sorted(Path(f).name for f in found["files"]) == visible_files(out)
    assert weir("ls", out, "--require-committed", timeout=60).returncode == 0
    assert ls_json(weir, out, "--require-committed", check=0)["status"] == "committed"


def test_ls_json_while_a_run_holds_the_prefix(weir, tmp_path, big, small, committed_small):
    out = committed_small
    job = job_file(tmp_path / "live.toml", big.path, out, THRESHOLDS[1], batch=16)
    run = Run(job, "-w", "1", "--var", "run_id=LIVE11")
    try:
        deadline, found = time.time() + 60, None
        while time.time() < deadline and run.proc.poll() is None:
            found = ls_json(weir, out)
            if found and found["status"] == "in_progress":
                break
            time.sleep(0.05)
        assert found and found["status"] == "in_progress", f"never in_progress: {found}\n{run.describe() if run.proc.poll() is not None else ''}"
        holder = found["holder"]
        assert holder["run_id"] == "LIVE11" and holder["pid"] == run.pid, holder
        assert holder["attempt"].startswith("LIVE11.") and holder["host"], holder
        assert datetime.fromisoformat(holder["since"].replace("Z", "+00:00")).tzinfo is not None, holder
        assert found["run_id"] == "lsC" and found["rows"] == small.refs[THRESHOLDS[0]].num_rows, found
        assert weir("ls", out, "--require-committed", timeout=60).returncode == 3
        os.kill(run.pid, signal.SIGTERM)
        assert run.wait(timeout=60) == 143, run.describe()
    finally:
        run.kill()
    found = ls_json(weir, out, check=0)
    assert found["status"] == "committed" and found["run_id"] == "lsC" and found["holder"] is None, found


def test_ls_json_after_a_sigkilled_first_run(weir, tmp_path, big):
    fresh = tmp_path / "fresh"
    job = job_file(tmp_path / "killed.toml", big.path, fresh, THRESHOLDS[1], ttl=2)
    run = Run(job, "-w", "2", "--var", "run_id=lsK")
    try:
        assert wait_mid_run(fresh, run), "the run ended before it could be killed mid-way: " + run.describe()
        os.kill(run.pid, signal.SIGKILL)
        killed_at = time.time()
        run.wait(timeout=30)
    finally:
        run.kill()
    found = ls_json(weir, fresh)
    assert found["status"] in ("uncommitted", "in_progress"), found
    assert found["run_id"] is None and found["rows"] is None and found["files"] == [], found
    assert weir("ls", fresh, "--require-committed", timeout=60).returncode == 3
    time.sleep(max(0.0, killed_at + 3.0 - time.time()))
    found = ls_json(weir, fresh)
    assert found["status"] == "uncommitted" and found["holder"] is None, found
    assert weir("ls", fresh, "--json", "--require-committed", timeout=60).returncode == 3
