"""Incremental sources (`source.incremental = true`) and `sink.mode = "append"`.

Nightly drops of new files land in one source prefix; each run adds the rows of the files
that the output's ledger (in its manifest) does not hold yet, as a new manifest generation,
without touching the committed part files. Checked against pyarrow (the reference: the
filter applied to the dropped tables with pyarrow.compute) and boto3 for the S3 case:

- three nights with new files, one changed file (exit 2 naming it, nothing committed; then
  `on_changed = "skip"`), one empty night (exit 0, "nothing new", nothing committed); the
  output holds the union of the inputs exactly once, read back as a plain pyarrow dataset;
  committed part files are never rewritten; one night runs on two processes;
- plain append (no ledger) adds a generation per run, and a later overwrite removes every
  appended file; append refuses a different schema and a run id used twice;
- `incremental` without `append`, and `on_changed` without `incremental`, are refused by
  `weir validate`;
- the same nights over Garage, where the versions are S3 ETags;
- twelve nights with runs killed at random moments, after their part files are staged, or
  in the publish window (on one process and on two): a committed output always holds
  exactly the rows of the files its ledger names, once each, and catching up afterwards
  adds every file once.
"""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from conftest import write_job
from helpers import Run, live_glob

THRESHOLD = 0.2

JOB = """name = "nightly-incremental"

[source]
uri = "{source}"
incremental = true
{on_changed}

[[step]]
op = "filter"
expr = "x >= {threshold}"

[sink]
uri = "{sink}"
mode = "append"
"""


def job_text(source, sink, on_changed=""):
    return JOB.format(source=source, sink=sink, on_changed=on_changed, threshold=THRESHOLD)


def drop(folder: Path, name: str, start: int, rows: int, seed: int) -> pa.Table:
    """Writes one night's file of `rows` rows with ids from `start`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    table = pa.table(
        {
            "id": np.arange(start, start + rows, dtype=np.int64),
            "x": rng.random(rows),
            "tag": pa.array([f"n{seed}-{i % 7}" for i in range(rows)], type=pa.string()),
        }
    )
    pq.write_table(table, folder / name, row_group_size=300)
    return table


def expected(tables) -> pa.Table:
    union = pa.concat_tables(tables)
    return union.filter(pc.greater_equal(union["x"], THRESHOLD)).sort_by("id")


def read_dataset(out: Path) -> pa.Table:
    """The output as a plain pyarrow dataset: the directory, no manifest (pyarrow skips
    `_` files and folders itself)."""
    return ds.dataset(out, format="parquet").to_table().sort_by("id")


def manifest(out: Path) -> dict:
    return json.loads((out / "_weir" / "manifest.json").read_text())


def fingerprint(out: Path) -> dict:
    """Each published part file: its inode and the SHA-256 of its bytes."""
    return {
        p.name: (p.stat().st_ino, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(out.glob("part-*.parquet"))
    }


def listing(out: Path) -> list:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_nightly_drops_with_a_changed_file_and_an_empty_night(weir, tmp_path):
    src, out = tmp_path / "drops", tmp_path / "out"
    job = write_job(tmp_path / "job.toml", job_text(src, out))

    # Night 1: two files.
    a = drop(src, "2026-11-01-a.parquet", 0, 1_000, 1)
    b = drop(src, "2026-11-01-b.parquet", 1_000, 800, 2)
    weir("run", job, "-w", "2", cwd=tmp_path, check=0)
    assert read_dataset(out).equals(expected([a, b]))
    first = manifest(out)
    assert first["generation"] == 1
    assert sorted(e["uri"].rsplit("/", 1)[1] for e in first["ledger"]) == ["2026-11-01-a.parquet", "2026-11-01-b.parquet"]
    night1 = fingerprint(out)

    # Night 2: one new file, on two processes; night 1's files stay as they were.
    c = drop(src, "2026-11-02-c.parquet", 1_800, 1_200, 3)
    proc = weir("run", job, "-p", "2", "-w", "1", cwd=tmp_path, check=0)
    assert "committed" in proc.stderr
    assert read_dataset(out).equals(expected([a, b, c]))
    second = manifest(out)
    assert second["generation"] == 2 and len(second["ledger"]) == 3
    assert [i["uri"].rsplit("/", 1)[1] for i in second["inputs"]] == ["2026-11-02-c.parquet"], "only the new file is read"
    assert second["rows"] == expected([a, b, c]).num_rows
    assert {f["path"] for f in second["files"]} == set(fingerprint(out)), "the manifest lists every part file"
    for name, print_ in night1.items():
        assert fingerprint(out)[name] == print_, f"{name} was rewritten"

    # Night 3: nothing new. Exit 0, says so, commits nothing.
    before = (listing(out), (out / "_weir" / "manifest.json").read_bytes())
    proc = weir("run", job, cwd=tmp_path, check=0)
    assert "nothing new" in proc.stderr, proc.stderr
    assert (listing(out), (out / "_weir" / "manifest.json").read_bytes()) == before
    assert weir("validate", job, cwd=tmp_path, check=0).stdout.count("nothing new") == 1

    # Night 4: a new file, and night 1's b rewritten. Refused by default, naming b.
    d = drop(src, "2026-11-04-d.parquet", 3_000, 700, 4)
    drop(src, "2026-11-01-b.parquet", 1_000, 900, 22)
    proc = weir("run", job, cwd=tmp_path, check=2)
    assert "2026-11-01-b.parquet" in proc.stderr and "changed" in proc.stderr, proc.stderr
    assert (listing(out), (out / "_weir" / "manifest.json").read_bytes()) == before, "nothing committed"

    # With on_changed = "skip": d is added, the changed b is not read again.
    skip = write_job(tmp_path / "skip.toml", job_text(src, out, 'on_changed = "skip"'))
    proc = weir("run", skip, cwd=tmp_path, check=0)
    assert "2026-11-01-b.parquet" in proc.stderr, "the skipped file is named in a warning"
    got = read_dataset(out)
    assert got.equals(expected([a, b, c, d])), "the union of the inputs, each once (b as first processed)"
    assert pc.count_distinct(got["id"]).as_py() == got.num_rows
    assert manifest(out)["generation"] == 3
    # And the night after, b is still skipped, nothing else is new.
    assert "nothing new" in weir("run", skip, cwd=tmp_path, check=0).stderr


def test_append_adds_generations_and_overwrite_then_replaces_them_all(weir, tmp_path):
    src = tmp_path / "src"
    table = drop(src, "part.parquet", 0, 1_000, 7)
    out = tmp_path / "out"
    text = f"""name = "appender"
[source]
uri = "{src}"
[[step]]
op = "filter"
expr = "x >= {THRESHOLD}"
[sink]
uri = "{out}"
mode = "append"
"""
    job = write_job(tmp_path / "append.toml", text)
    weir("run", job, "--var", "run_id=first", cwd=tmp_path, check=0)
    weir("run", job, "--var", "run_id=second", "-w", "2", cwd=tmp_path, check=0)
    once = expected([table])
    got = read_dataset(out)
    assert got.num_rows == 2 * once.num_rows
    assert got.filter(pc.equal(got["id"], once["id"][0])).num_rows == 2
    m = manifest(out)
    assert m["generation"] == 2 and m["rows"] == 2 * once.num_rows and "ledger" not in m

    # The same run id again would replace committed files: refused, nothing changes.
    before = listing(out)
    proc = weir("run", job, "--var", "run_id=first", cwd=tmp_path, check=2)
    assert "cannot append" in proc.stderr and "first" in proc.stderr, proc.stderr
    assert listing(out) == before

    # Another schema: refused, naming the column.
    cast = f'expr = "x >= {THRESHOLD}"\n[[step]]\nop = "cast"\ncolumns = {{ id = "float64" }}'
    narrow = write_job(tmp_path / "narrow.toml", text.replace(f'expr = "x >= {THRESHOLD}"', cast))
    proc = weir("run", narrow, cwd=tmp_path, check=2)
    assert "cannot append" in proc.stderr and "'id'" in proc.stderr, proc.stderr
    assert listing(out) == before

    # Overwrite afterwards deletes every appended file and leaves one copy.
    over = write_job(tmp_path / "over.toml", text.replace('mode = "append"', 'mode = "overwrite"'))
    weir("run", over, cwd=tmp_path, check=0)
    assert read_dataset(out).equals(once)
    assert len(list(out.glob("part-*.parquet"))) == len(manifest(out)["files"])
    assert manifest(out)["generation"] == 3


def test_incremental_needs_append_and_on_changed_needs_incremental(weir, tmp_path):
    src = tmp_path / "src"
    drop(src, "a.parquet", 0, 10, 1)
    bad = write_job(tmp_path / "bad.toml", job_text(src, tmp_path / "out").replace('mode = "append"', 'mode = "overwrite"'))
    proc = weir("validate", bad, cwd=tmp_path, check=2)
    assert 'source.incremental needs sink.mode = "append"' in proc.stderr, proc.stderr
    stray = write_job(
        tmp_path / "stray.toml",
        job_text(src, tmp_path / "out", 'on_changed = "skip"').replace("incremental = true\n", ""),
    )
    proc = weir("validate", stray, cwd=tmp_path, check=2)
    assert "source.on_changed applies only to an incremental source" in proc.stderr, proc.stderr


def test_incremental_nights_over_garage(weir, tmp_path, garage):
    src, dst = garage.new_bucket("drops"), garage.new_bucket("out")
    env = garage.env()
    client = garage.client()
    job = write_job(tmp_path / "job.toml", job_text(f"s3://{src}/events/", f"s3://{dst}/nightly/"))
    local = tmp_path / "local"
    tables = []
    for night, rows in enumerate([900, 0, 1_100]):
        if rows:
            tables.append(drop(local, f"night-{night}.parquet", night * 10_000, rows, 30 + night))
            client.upload_file(str(local / f"night-{night}.parquet"), src, f"events/night-{night}.parquet")
            weir("run", job, "-w", "2", env=env, cwd=tmp_path, check=0)
        else:
            assert "nothing new" in weir("run", job, env=env, cwd=tmp_path, check=0).stderr
    m = json.loads(client.get_object(Bucket=dst, Key="nightly/_weir/manifest.json")["Body"].read())
    assert m["generation"] == 2
    etags = {e["uri"].rsplit("/", 1)[1]: e["version"] for e in m["ledger"]}
    for key in ("night-0.parquet", "night-2.parquet"):
        assert etags[key] == client.head_object(Bucket=src, Key=f"events/{key}")["ETag"], "the ledger keeps S3 ETags"
    parts = []
    for entry in m["files"]:
        body = client.get_object(Bucket=dst, Key=f"nightly/{entry['path']}")["Body"].read()
        parts.append(pq.read_table(pa.BufferReader(body)))
    assert pa.concat_tables(parts).sort_by("id").equals(expected(tables))

    # Re-uploading night 0 with other bytes is a changed file: exit 2, named.
    drop(local, "night-0.parquet", 0, 950, 99)
    client.upload_file(str(local / "night-0.parquet"), src, "events/night-0.parquet")
    proc = weir("run", job, env=env, cwd=tmp_path, check=2)
    assert "night-0.parquet" in proc.stderr and "changed" in proc.stderr, proc.stderr


def test_killed_incremental_runs_never_lose_or_duplicate_a_file(weir, tmp_path):
    """Nightly drops with runs killed (SIGKILL or SIGTERM) at random moments, on one process
    or two. After every run, a committed output holds exactly the rows of the files its
    ledger names, each once; at the end, after runs that finish, every file's rows, once."""
    rng = np.random.default_rng(2026)
    src, out = tmp_path / "drops", tmp_path / "out"
    job = write_job(tmp_path / "job.toml", job_text(src, out).replace('mode = "append"', 'mode = "append"\nlease_ttl_s = 2'))
    tables = {}
    log = []

    def check():
        if not (out / "_SUCCESS").exists():
            return
        ledger = [e["uri"].rsplit("/", 1)[1] for e in manifest(out)["ledger"]]
        assert len(ledger) == len(set(ledger)), f"a file twice in the ledger: {ledger}\n" + "\n".join(log)
        want = expected([tables[name] for name in ledger])
        got = read_dataset(out)
        assert got.equals(want), f"the output is not the ledger's files once each\n" + "\n".join(log)

    def appeared(pattern):
        return bool(live_glob(out / "_weir" / "runs", pattern))

    duration = 1.0
    for night in range(12):
        name = f"night-{night}.parquet"
        tables[name] = drop(src, name, night * 1_000_000, 150_000, 100 + night)
        shape = [["-w", "2"], ["-p", "2", "-w", "1"]][night % 2]
        began = time.time()
        run = Run(job, *shape, "--var", f"run_id=n{night}", cwd=tmp_path)
        aim = ["random", "staged", "decided"][night % 3] if night else "none"
        action = "none"
        try:
            if aim == "random":
                try:
                    run.proc.wait(timeout=float(rng.uniform(0, duration)))
                except subprocess.TimeoutExpired:
                    pass
            elif aim != "none":
                # This run's attempt directory: n<night>.<8 hex>.
                pattern = f"n{night}.*/commit.json" if aim == "decided" else f"n{night}.*/part-*.staged"
                while run.proc.poll() is None and not appeared(pattern) and time.time() < began + 30:
                    time.sleep(0.0005)
            if run.proc.poll() is None and aim != "none":
                action = "SIGTERM" if aim == "random" and rng.random() < 0.4 else "SIGKILL"
                os.kill(run.pid, signal.SIGKILL if action == "SIGKILL" else signal.SIGTERM)
            rc = run.wait(timeout=120)
        finally:
            run.kill()
        if night == 0:
            duration = time.time() - began
        log.append(f"night {night}: {' '.join(shape)}, {action} at {aim} after {time.time() - began:.2f}s -> {rc}: {run.stderr.strip()[-300:]}")
        # Killed: -9 / 143 / -15; held by a killed run's lease, or its publication completed
        # under this run (the output moved on): 2 / 1, and a later run catches up.
        assert rc in {0, 1, 2, 143, -signal.SIGKILL, -signal.SIGTERM}, "\n".join(log)
        check()
        if action == "SIGKILL" and rng.random() < 0.5:
            time.sleep(2.2)  # sometimes let the killed run's lease expire, sometimes race it

    # Catch up: runs until one finds nothing new.
    for attempt in range(20):
        proc = weir("run", job, "--var", f"run_id=catch-up-{attempt}", cwd=tmp_path)
        log.append(f"catch-up {attempt}: {proc.returncode}: {proc.stderr.strip()[-300:]}")
        check()
        if proc.returncode == 0 and "nothing new" in proc.stderr:
            break
        time.sleep(0.5 if proc.returncode == 0 else 2.2)  # a killed run's lease: 2 s
    else:
        raise AssertionError("never caught up\n" + "\n".join(log))
    assert read_dataset(out).equals(expected(list(tables.values()))), "\n".join(log)

    # A run with nothing new does not touch the output, so a killed run's directory may
    # still be there; the next run that takes the lease removes it (once it has expired).
    tables["last.parquet"] = drop(src, "last.parquet", 99_000_000, 1_000, 999)
    for attempt in range(10):
        proc = weir("run", job, "--var", f"run_id=last-{attempt}", cwd=tmp_path)
        log.append(f"last {attempt}: {proc.returncode}: {proc.stderr.strip()[-300:]}")
        if proc.returncode == 0:
            break
        time.sleep(2.2)
    assert proc.returncode == 0, "\n".join(log)
    assert read_dataset(out).equals(expected(list(tables.values()))), "\n".join(log)
    leftovers = list((out / "_weir" / "runs").glob("*")) if (out / "_weir" / "runs").exists() else []
    assert leftovers == [], f"killed runs' directories left behind: {leftovers}\n" + "\n".join(log)
