"""The Python client (clients/python, `weir_client`): snapshot reads of committed outputs.

Every expectation is computed from the input with pyarrow (or listed with boto3), never
taken from Weir's output.

- A committed run reads back as the input's rows that pass the job's filter; `columns`,
  `filter`, `file://` and `dataset()` work, and `dataset()` names exactly the manifest's
  files; a file no manifest records (in the prefix, or staged under `_weir/runs/`) is not read.
- A partitioned output (`partition_by`) comes back with its partition columns typed as the
  manifest says (date32, int64, string with `/`, `=`, `%` and null folders), in the
  manifest's order; a partitioned output of no rows (no file at all) as an empty table of
  the same schema.
- Not committed (no `_SUCCESS`, only part files, a listed file gone) raises `NotCommitted`
  naming what is missing; `generation=` reads only the committed generation, naming it.
- Encrypted outputs (`keys = "kms"`) decrypt with the keys of the environment, as the CLI
  finds them (`WEIR_KEY_<ID>`, `WEIR_KEY_DIR`); a missing or wrong key is named; the footer
  key alone reads the columns it covers; `keys = "direct"` is refused clearly.
- An s3:// output on a Garage server, through the same AWS variables `weir run` used.
- A commit placed inside a read for certain (a filesystem that runs `weir run` when the read
  opens its N-th file; both runs write the same file names and row counts): the read comes
  back as the new run's rows, whole, never a mix.
- A read while a failpoint holds a run in its publish window waits and returns the new run;
  after the run is killed there, it names `_SUCCESS` and the interrupted commit; the next run
  completes it and the read succeeds.
- The snapshot loop: RUNS overwrites of one prefix in a background thread, each with its own
  marker `gen` and row count, while the main thread reads, alternating `read_table` and a
  plain `pyarrow.dataset(prefix)`. Every `read_table` holds exactly one run's rows, whole,
  never going back to an earlier run; what the plain reader saw is counted and printed
  (the README reports it), not asserted.
"""

import base64
import datetime
import json
import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

import weir_client
from conftest import WEIR_BIN, write_dataset, write_job
from helpers import Run, attempt_files, run_retrying

THRESHOLD = 0.3
# Overwrites in the snapshot loop; run `gen` writes rows_of(gen) rows, each with gen as its marker.
RUNS = 300


def rows_of(gen: int) -> int:
    return 5_000 + 997 * (gen % 7)


def events(rows: int, seed: int, gen=None) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns = {
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "x": pa.array(rng.random(rows)),
        "label": pa.array(rng.choice(np.array(["a", "bb", "ccc"]), rows), type=pa.string()),
    }
    if gen is not None:
        columns["gen"] = pa.array(np.full(rows, gen, dtype=np.int64))
    return pa.table(columns)


def filter_job(path: Path, src, out, sink: str = "", threshold: float = THRESHOLD) -> Path:
    return write_job(
        path,
        f'name = "client"\n[source]\nuri = "{src}"\n[[step]]\nop = "filter"\nexpr = "x >= {threshold}"\n'
        f'[sink]\nuri = "{out}"\nmode = "overwrite"\n{sink}\n',
    )


def overwrite_job(path: Path, src: Path, out: Path, sink: str = "") -> Path:
    """A job that copies `src` into `out`, replacing what `out` held."""
    return write_job(
        path, f'name = "copy"\n[source]\nuri = "{src}"\n[sink]\nuri = "{out}"\nmode = "overwrite"\n{sink}\n'
    )


def expected_rows(table: pa.Table) -> pa.Table:
    """The job's rows, from the input: x >= THRESHOLD."""
    return table.filter(pc.field("x") >= THRESHOLD).sort_by("id")


def manifest_of(out: Path) -> dict:
    return json.loads((out / "_weir" / "manifest.json").read_text())


@pytest.fixture
def committed(weir, tmp_path):
    """An output of filter_job over a few input files, committed by `-w 3` (several parts)."""
    table = events(9_000, seed=37)
    src = write_dataset(table, tmp_path / "in")
    out = tmp_path / "out"
    weir("run", filter_job(tmp_path / "job.toml", src, out), "-w", "3", cwd=tmp_path, check=0)
    return table, out


def test_read_table_is_the_manifests_files(committed):
    table, out = committed
    want = expected_rows(table)
    manifest = manifest_of(out)
    assert len(manifest["files"]) >= 2, manifest["files"]

    got = weir_client.read_table(out)
    assert got.column_names == ["id", "x", "label"]
    assert got.sort_by("id").equals(want)
    assert weir_client.read_table(f"file://{out}").sort_by("id").equals(want)
    assert weir_client.read_table(str(out) + "/").sort_by("id").equals(want)

    picked = weir_client.read_table(out, columns=["label", "id"], filter=pc.field("label") == "bb")
    assert picked.column_names == ["label", "id"]
    assert picked.sort_by("id").equals(want.filter(pc.field("label") == "bb").select(["label", "id"]))

    found = weir_client.dataset(out)
    assert sorted(found.files) == sorted(str(out / f["path"]) for f in manifest["files"])
    assert found.to_table().sort_by("id").equals(want)
    info = weir_client.read_manifest(out)
    assert info.generation == manifest["generation"] == 1 and info.rows == want.num_rows
    assert [f.path for f in info.files] == [f["path"] for f in manifest["files"]]

    # Files no manifest records: a stray visible file, and a copy of the rows staged where a
    # running run stages them. Plain directory readers see the first; the client sees neither.
    stray = events(500, seed=1)
    pq.write_table(stray, out / "part-99999-stray.parquet")
    staged = out / "_weir" / "runs" / "r.1"
    staged.mkdir(parents=True)
    pq.write_table(stray, staged / "part-00000.parquet")
    assert ds.dataset(out, format="parquet").count_rows() == want.num_rows + stray.num_rows
    assert weir_client.read_table(out).sort_by("id").equals(want)


def partitioned_events(rows: int = 4_000) -> pa.Table:
    rng = np.random.default_rng(11)
    days = [datetime.date(2026, 11, 27) + datetime.timedelta(days=int(d)) for d in rng.integers(0, 3, rows)]
    country = rng.choice(np.array(["DE", "FR", "a/b", "x=y %"], dtype=object), rows)
    country[rng.random(rows) < 0.05] = None
    seen = np.datetime64("2026-11-27T00:00:00", "us") + rng.integers(0, 86_400_000_000, rows).astype("timedelta64[us]")
    return pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "date": pa.array(days, type=pa.date32()),
            "x": pa.array(rng.random(rows)),
            "seen": pa.array(seen, type=pa.timestamp("us", tz="UTC")),
            "bucket": pa.array(rng.integers(0, 3, rows), type=pa.int64()),
            "country": pa.array(country, type=pa.string()),
        }
    )


def test_partition_columns_come_back_typed(weir, tmp_path):
    table = partitioned_events()
    src = tmp_path / "in"
    src.mkdir()
    pq.write_table(table, src / "events.parquet")
    out = tmp_path / "out"
    partitioned = 'partition_by = ["date", "bucket", "country"]'
    weir("run", filter_job(tmp_path / "job.toml", src, out, sink=partitioned), "-w", "2", cwd=tmp_path, check=0)
    manifest = manifest_of(out)
    assert manifest["partition_by"] == ["date", "bucket", "country"]
    assert all(f["path"].count("/") == 3 for f in manifest["files"])

    got = weir_client.read_table(out)
    # The manifest's column order (the job's), with the partition columns typed as it says.
    assert got.schema == table.schema, got.schema
    want = expected_rows(table)
    assert got.sort_by("id").equals(want)
    assert set(got["country"].to_pylist()) == {"DE", "FR", "a/b", "x=y %", None}

    # A filter on partition columns, and a projection that holds one.
    where = (pc.field("bucket") == 1) & pc.field("country").is_null()
    some = weir_client.read_table(out, columns=["id", "country"], filter=where)
    assert some.sort_by("id").equals(want.filter(where).select(["id", "country"]))
    assert some.num_rows > 0
    day = datetime.date(2026, 11, 28)
    found = weir_client.dataset(out)
    on_day = found.to_table(filter=pc.field("date") == day)
    assert on_day.sort_by("id").equals(want.filter(pc.field("date") == day))
    # DuckDB scans the Dataset (partition columns included) as pyarrow counts the input.
    counts = duckdb.sql("select country, count(*) from found group by 1").fetchall()
    expected = want.group_by("country").aggregate([("id", "count")]).to_pylist()
    assert sorted(counts, key=str) == sorted(((r["country"], r["id_count"]) for r in expected), key=str)

    # No row passes: a partitioned output of no rows has no part file at all; it reads as an
    # empty table of the same schema, from the manifest alone.
    none = tmp_path / "none"
    weir("run", filter_job(tmp_path / "none.toml", src, none, sink=partitioned, threshold=2), cwd=tmp_path, check=0)
    assert manifest_of(none)["files"] == []
    empty = weir_client.read_table(none)
    assert empty.num_rows == 0 and empty.schema == table.schema, empty.schema


def test_an_uncommitted_output_raises_not_committed(committed, tmp_path):
    table, out = committed
    first = manifest_of(out)["files"][0]["path"]

    # A listed file gone: named.
    saved = (out / first).read_bytes()
    (out / first).unlink()
    with pytest.raises(weir_client.NotCommitted) as caught:
        weir_client.read_table(out)
    assert caught.value.missing == (first,) and first in str(caught.value)
    (out / first).write_bytes(saved)
    assert weir_client.read_table(out).num_rows == expected_rows(table).num_rows

    # No _SUCCESS.
    (out / "_SUCCESS").unlink()
    for read in (weir_client.read_table, weir_client.dataset, weir_client.read_manifest):
        with pytest.raises(weir_client.NotCommitted) as caught:
            read(out)
        assert caught.value.missing == ("_SUCCESS",) and "_SUCCESS" in str(caught.value)
    assert isinstance(caught.value, weir_client.WeirError)

    # Only part files: neither manifest nor _SUCCESS.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(out / first, bare / Path(first).name)
    with pytest.raises(weir_client.NotCommitted) as caught:
        weir_client.read_table(f"file://{bare}")
    assert caught.value.missing == ("_weir/manifest.json", "_SUCCESS")
    with pytest.raises(weir_client.NotCommitted):
        weir_client.read_table(tmp_path / "nothing-here")


def test_only_the_committed_generation_is_readable(committed, tmp_path, weir):
    table, out = committed
    assert weir_client.read_table(out, generation=1).num_rows == expected_rows(table).num_rows
    weir("run", tmp_path / "job.toml", "-w", "2", cwd=tmp_path, check=0)  # generation 2
    assert manifest_of(out)["generation"] == 2
    assert weir_client.read_table(out, generation=2).sort_by("id").equals(expected_rows(table))
    for asked, words in ((1, "only generation 2 is readable"), (3, "not committed yet")):
        with pytest.raises(weir_client.GenerationUnavailable) as caught:
            weir_client.read_table(out, generation=asked)
        assert caught.value.available == (2,) and words in str(caught.value), str(caught.value)
        with pytest.raises(weir_client.GenerationUnavailable):
            weir_client.dataset(out, generation=asked)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def test_an_encrypted_output_decrypts_with_the_clis_key_environment(weir, tmp_path, monkeypatch):
    table = events(5_000, seed=3)
    src = write_dataset(table, tmp_path / "in")
    want = expected_rows(table)
    keys = {"footer": os.urandom(16), "team-a.pii": os.urandom(32)}
    base = {k: v for k, v in os.environ.items() if not k.startswith("WEIR_KEY_")}
    for name in [k for k in os.environ if k.startswith("WEIR_KEY_")]:
        monkeypatch.delenv(name)

    def run(out: Path, encryption: str, env: dict):
        job = filter_job(tmp_path / f"{out.name}.toml", src, out, sink=f"[sink.encryption]\n{encryption}")
        weir("run", job, "-w", "2", cwd=tmp_path, env={**base, **env}, check=0)

    # kms (the default): the key ids name master keys, here both from the environment.
    secret = tmp_path / "secret"
    env = {"WEIR_KEY_FOOTER": b64(keys["footer"]), "WEIR_KEY_TEAM_A_PII": b64(keys["team-a.pii"])}
    run(secret, 'footer_key = "footer"\ncolumn_keys = { "team-a.pii" = ["label"] }\n', env)
    assert manifest_of(secret)["encryption"]["footer_key"] == "footer"
    part = secret / manifest_of(secret)["files"][0]["path"]
    with pytest.raises(OSError, match="encrypted"):
        pq.read_table(part)  # really encrypted: pyarrow without keys reads nothing

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert weir_client.read_table(secret).sort_by("id").equals(want)
    assert weir_client.dataset(secret).to_table().sort_by("id").equals(want)

    # The footer key alone reads the columns under it; `label` needs its own key, named.
    monkeypatch.delenv("WEIR_KEY_TEAM_A_PII")
    assert weir_client.read_table(secret, columns=["id", "x"]).sort_by("id").equals(want.select(["id", "x"]))
    with pytest.raises(weir_client.KeyUnavailable) as caught:
        weir_client.read_table(secret)
    assert caught.value.key_id == "team-a.pii" and "WEIR_KEY_TEAM_A_PII" in str(caught.value), str(caught.value)

    # Keys from a WEIR_KEY_DIR folder (a mounted Secret); the variable wins over the folder.
    folder = tmp_path / "keys"
    folder.mkdir()
    for key_id, key in keys.items():
        (folder / key_id).write_text(b64(key) + "\n")
    monkeypatch.setenv("WEIR_KEY_DIR", str(folder))
    assert weir_client.read_table(secret).sort_by("id").equals(want)
    monkeypatch.setenv("WEIR_KEY_FOOTER", b64(os.urandom(16)))
    with pytest.raises(weir_client.KeyUnavailable) as caught:
        weir_client.read_table(secret)
    assert caught.value.key_id == "footer" and "wrong master key" in str(caught.value), str(caught.value)
    for text in (str(caught.value), repr(caught.value)):
        assert not any(b64(key) in text for key in keys.values())
    monkeypatch.delenv("WEIR_KEY_FOOTER")
    monkeypatch.delenv("WEIR_KEY_DIR")
    with pytest.raises(weir_client.KeyUnavailable, match="set WEIR_KEY_FOOTER"):
        weir_client.read_table(secret)

    # keys = "direct" (the ids name data keys): pyarrow's Python API takes no explicit keys.
    direct = tmp_path / "direct"
    run(direct, 'footer_key = "footer"\nkeys = "direct"\n', {"WEIR_KEY_FOOTER": b64(keys["footer"])})
    monkeypatch.setenv("WEIR_KEY_FOOTER", b64(keys["footer"]))
    for read in (weir_client.read_table, weir_client.dataset):
        with pytest.raises(weir_client.EncryptionNotSupported, match="'direct'"):
            read(direct)
    assert weir_client.read_manifest(direct).rows == want.num_rows  # the manifest is not encrypted


def test_an_s3_output_through_the_clis_aws_environment(weir, tmp_path, garage, monkeypatch):
    table = events(6_000, seed=5)
    src = write_dataset(table, tmp_path / "in")
    bucket = garage.new_bucket("client")
    uri = f"s3://{bucket}/features"
    env = garage.env()
    job = filter_job(tmp_path / "job.toml", src, uri, sink='partition_by = ["label"]')
    weir("run", job, "-w", "2", cwd=tmp_path, env=env, check=0)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP"):
        monkeypatch.setenv(name, env[name])
    got = weir_client.read_table(uri + "/")
    assert got.sort_by("id").equals(expected_rows(table))
    parts = [key for key in garage.keys(bucket, "features/") if key.endswith(".parquet")]
    assert {path.split("/", 1)[1] for path in weir_client.dataset(uri).files} == set(parts)
    garage.client().delete_object(Bucket=bucket, Key="features/_SUCCESS")
    with pytest.raises(weir_client.NotCommitted) as caught:
        weir_client.read_table(uri)
    assert caught.value.missing == ("_SUCCESS",)


# ---------------------------------------------------------------------------------------
# A commit inside a read, placed for certain: a filesystem that runs a whole `weir run`
# when the read opens its N-th part file.


class CommitDuringRead(pafs.FileSystemHandler):
    """The local filesystem, but the `at`-th opening of a Parquet file first runs `commit`."""

    def __init__(self, at, commit):
        self.local = pafs.LocalFileSystem()
        self.at, self.commit = at, commit
        self.opened = 0
        self.lock = threading.Lock()

    def open_input_file(self, path):
        if path.endswith(".parquet"):
            with self.lock:
                self.opened += 1
                now = self.opened == self.at
            if now:
                self.commit()
        return self.local.open_input_file(path)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def get_type_name(self):
        return "commit-during-read"

    def normalize_path(self, path):
        return path

    def equals(self, other):
        return self is other

    def _read_only(self, *args):
        raise NotImplementedError("read only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _read_only
    move = copy_file = open_output_stream = open_append_stream = _read_only


@pytest.mark.parametrize("at", [1, 2, 4])
def test_a_commit_during_a_read_gives_the_new_run_whole(weir, tmp_path, at):
    """Both runs use one run id and write as many rows, so they write files of the same
    names and row counts: a reader that trusted a manifest's names without looking at the
    prefix again after reading would mix the two runs' files. (The first opening is the
    schema's, the others the scan's.)"""
    out = tmp_path / "out"
    tables = [events(8_000, seed=gen, gen=gen) for gen in (0, 1)]
    jobs = []
    for gen, table in enumerate(tables):
        src = write_dataset(table, tmp_path / f"in-{gen}", pieces=(0.35, 0.3, 0.35), row_group=2_000)
        jobs.append(overwrite_job(tmp_path / f"job-{gen}.toml", src, out))
    weir("run", jobs[0], "-w", "3", "--var", "run_id=same", cwd=tmp_path, check=0)
    names = sorted(f["path"] for f in manifest_of(out)["files"])
    assert len(names) == 3

    def commit():
        weir("run", jobs[1], "-w", "3", "--var", "run_id=same", cwd=tmp_path, check=0)

    handler = CommitDuringRead(at, commit)
    got = weir_client.read_table(out, filesystem=pafs.PyFileSystem(handler))
    assert handler.opened >= at, "the commit ran inside the read"
    assert sorted(f["path"] for f in manifest_of(out)["files"]) == names, "the new run's files have the old names"
    assert manifest_of(out)["generation"] == 2
    assert pc.unique(got["gen"]).to_pylist() == [1], f"a mix of runs: {pc.value_counts(got['gen']).to_pylist()}"
    assert got.sort_by("id").equals(tables[1].sort_by("id"))


def held_in_publish_window(out: Path, run_id: str, previous_run: str) -> bool:
    """Whether run `run_id` wrote its commit decision and deleted the previous run's files."""
    return "commit.json" in attempt_files(out, run_id) and not any(out.glob(f"part-*-{previous_run}.parquet"))


def test_a_read_in_the_publish_window_waits_for_the_commit_or_names_it(weir, tmp_path):
    """A failpoint holds a run in its publish window (`_SUCCESS` and the previous files
    deleted, the new ones not in place): a read then waits and returns the new run, whole;
    once a run is killed there, the read gives up with `NotCommitted` naming `_SUCCESS`
    and the interrupted commit, until the next run on the prefix completes it."""
    out = tmp_path / "out"
    tables = [events(rows_of(gen), seed=gen, gen=gen) for gen in range(4)]
    # Run 2 is killed holding the prefix: a short lease, so that run 3 may soon take over.
    jobs = []
    for gen, table in enumerate(tables):
        sink = "lease_ttl_s = 2" if gen == 2 else ""
        jobs.append(overwrite_job(tmp_path / f"job-{gen}.toml", write_dataset(table, tmp_path / f"in-{gen}"), out, sink))
    weir("run", jobs[0], "-w", "3", "--var", "run_id=r0", cwd=tmp_path, check=0)

    for gen, hold_ms in ((1, 1500), (2, 60_000)):
        env = {**os.environ, "FAILPOINTS": f"publish-old-deleted=sleep({hold_ms})"}
        run = Run(jobs[gen], "-w", "3", "--var", f"run_id=r{gen}", env=env, cwd=tmp_path)
        try:
            while run.proc.poll() is None and not held_in_publish_window(out, f"r{gen}", f"r{gen - 1}"):
                time.sleep(0.002)
            assert run.proc.poll() is None, "the run ended before its publish window: " + run.describe()
            assert not (out / "_SUCCESS").exists()
            if gen == 1:
                # Waits for the held commit: run 0's files are gone, run 1's not yet in place.
                got = weir_client.read_table(out)
                assert run.wait(timeout=60) == 0, run.describe()
                assert got.sort_by("id").equals(tables[1].sort_by("id"))
            else:
                run.proc.kill()
                run.wait(timeout=60)
                with pytest.raises(weir_client.NotCommitted) as caught:
                    weir_client.read_table(out, max_wait_s=1)  # the interrupted commit never ends
                assert "_SUCCESS" in caught.value.missing and "interrupted" in str(caught.value), str(caught.value)
        finally:
            run.kill()
    # The next run, once the killed run's lease expired, completes its commit (generation 3),
    # then commits its own.
    after = run_retrying(weir, "run", jobs[3], "-w", "3", "--var", "run_id=r3", cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    got = weir_client.read_table(out, generation=4)
    assert got.sort_by("id").equals(tables[3].sort_by("id"))


# ---------------------------------------------------------------------------------------
# The snapshot loop


def tally(reads) -> Counter:
    """Each read as one of: whole (one run's rows, all of them), partial (one run's, not all),
    mixed (rows of several runs), empty (no part file at all), error (the read raised)."""
    counts = Counter()
    for entry in reads:
        if isinstance(entry, str):
            counts["error"] += 1
        elif len(entry[0]) != 1:
            counts["mixed" if len(entry[0]) > 1 else "empty"] += 1
        elif entry[1] != rows_of(entry[0][0]):
            counts["partial"] += 1
        else:
            counts["whole"] += 1
    return counts


def test_snapshot_reads_while_runs_overwrite_the_prefix(weir, tmp_path, monkeypatch):
    """Commits run 0, then runs RUNS more overwrites (run g writes rows_of(g) rows, all with
    marker gen = g) in a background thread while this thread reads the prefix over and over,
    alternating `weir_client.read_table` and a plain `pyarrow.dataset(prefix)` read."""
    out = tmp_path / "out"
    jobs = []
    for gen in range(RUNS + 1):
        table = events(rows_of(gen), seed=gen, gen=gen)
        src = write_dataset(table, tmp_path / f"in-{gen}", pieces=(0.35, 0.3, 0.35), row_group=2_000)
        jobs.append(overwrite_job(tmp_path / f"job-{gen}.toml", src, out))
    weir("run", jobs[0], "-w", "3", cwd=tmp_path, check=0)

    # Counts the client's retries (it sleeps once before each): a read that a commit
    # overlapped starts again from the new manifest. Reported, not asserted: the
    # tests above place such overlaps for certain.
    waits = Counter()

    def counted_sleep(seconds):
        waits["n"] += 1
        time.sleep(seconds)

    monkeypatch.setattr(weir_client._read, "time", SimpleNamespace(sleep=counted_sleep, monotonic=time.monotonic))

    results = []

    def overwrite():
        for job in jobs[1:]:
            args = [str(WEIR_BIN), "run", str(job), "-w", "3", "--quiet"]
            results.append(subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120))

    def plain(prefix):
        return ds.dataset(str(prefix), format="parquet").to_table()

    def seen(read):
        try:
            table = read(out)
        except Exception as error:  # noqa: BLE001 - counted: what a plain reader meets
            return f"{type(error).__name__}: {error}"
        gens = pc.unique(table["gen"]).to_pylist() if "gen" in table.column_names else []
        return tuple(sorted(gens)), table.num_rows

    client_reads, plain_reads, retried = [], [], []
    started = time.monotonic()
    background = threading.Thread(target=overwrite)
    background.start()
    try:
        while background.is_alive():
            before = waits["n"]
            client_reads.append(seen(weir_client.read_table))
            retried.append(waits["n"] - before)
            plain_reads.append(seen(plain))
    finally:
        background.join()
    elapsed = time.monotonic() - started
    for proc in results:
        assert proc.returncode == 0, proc.stderr
    assert len(results) == RUNS

    client, plain_counts = tally(client_reads), tally(plain_reads)
    gens = [entry[0][0] for entry in client_reads if not isinstance(entry, str) and len(entry[0]) == 1]
    errors = Counter(entry.split(":", 1)[0] for entry in plain_reads if isinstance(entry, str))
    print(
        f"\n{RUNS} overwrites in {elapsed:.1f} s; weir_client.read_table: {len(client_reads)} reads, "
        f"{dict(client)}, {sum(1 for n in retried if n)} overlapped a commit and started again "
        f"({sum(retried)} retries, at most {max(retried, default=0)} in one read), "
        f"{len(set(gens))} of {RUNS + 1} runs seen; plain pyarrow.dataset: {len(plain_reads)} reads, "
        f"{dict(plain_counts)}, errors {dict(errors)}"
    )
    assert client_reads, "no read ran"
    bad = [e for e in client_reads if isinstance(e, str) or len(e[0]) != 1 or e[1] != rows_of(e[0][0])]
    assert bad == [], f"{len(bad)} reads were not one whole run: {bad[:5]}"
    assert gens == sorted(gens), "a later read saw an earlier run"
    final = weir_client.read_table(out)
    assert pc.unique(final["gen"]).to_pylist() == [RUNS] and final.num_rows == rows_of(RUNS)
