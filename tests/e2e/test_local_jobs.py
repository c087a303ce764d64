"""End-to-end tests of `weir run` on the local store, checked against pyarrow.

The reference output of every job is computed with pyarrow from the same input files (the
clean-events job's with pyarrow.compute, by `clean_reference` in helpers.py), never from
Weir's own output.
"""

import json
import math
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import data_files, read_inputs, read_output, write_job
from helpers import CLEAN_JOB, SHAPES_1_4_AND_2X2, assert_committed, assert_same_rows, clean_reference, shape_id


@pytest.mark.parametrize("shape", SHAPES_1_4_AND_2X2, ids=shape_id)
def test_clean_job_matches_pyarrow_whatever_the_cluster_shape(weir, tmp_path, events_dir, shape):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", CLEAN_JOB.format(src=events_dir, out=out, mode="error_if_exists"))
    result = weir("run", job, *shape, "--json", check=0)
    summary = json.loads(result.stdout)
    want = clean_reference(events_dir)
    got = read_output(out)
    assert_same_rows(got, want)
    assert summary["rows_out"] == want.num_rows
    assert summary["rows_in"] == sum(pq.ParquetFile(f).metadata.num_rows for f in data_files(events_dir))
    manifest = assert_committed(out, want.num_rows)
    assert [c["name"] for c in manifest["schema"]] == want.column_names
    assert len(manifest["inputs"]) == 4


def test_a_shards_rows_keep_their_order(weir, tmp_path, events_dir):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", CLEAN_JOB.format(src=events_dir, out=out, mode="error_if_exists"))
    weir("run", job, "-w", "3", check=0)
    for part in data_files(out):
        ids = pq.read_table(part)["id"].to_pylist()
        assert ids == sorted(ids), f"{part.name} holds rows out of order"
    # With one worker, every shard is read in order: the whole output is in input order.
    out1 = tmp_path / "out1"
    job1 = write_job(tmp_path / "job1.toml", CLEAN_JOB.format(src=events_dir, out=out1, mode="error_if_exists"))
    weir("run", job1, "-w", "1", check=0)
    assert read_output(out1)["id"].to_pylist() == clean_reference(events_dir)["id"].to_pylist()


def test_a_job_without_steps_copies_every_value_and_null(weir, tmp_path, events_dir):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", f'name = "copy"\n[source]\nuri = "{events_dir}"\n[sink]\nuri = "{out}"\ncompression = "snappy"\n')
    weir("run", job, "-w", "2", check=0)
    want = read_inputs(events_dir)
    got = read_output(out)
    assert got.schema.equals(want.schema, check_metadata=False)
    assert_same_rows(got, want)
    assert got["email"].null_count == want["email"].null_count > 0


def test_zero_row_result_still_commits_the_schema(weir, tmp_path, events_dir):
    out = tmp_path / "out"
    text = CLEAN_JOB.format(src=events_dir, out=out, mode="error_if_exists").replace("age >= 18", "age > 1000")
    job = write_job(tmp_path / "job.toml", text)
    weir("run", job, "-p", "2", "-w", "1", check=0)
    manifest = assert_committed(out, 0)
    assert len(manifest["files"]) == 1
    table = read_output(out)
    assert table.num_rows == 0
    assert table.column_names == ["id", "age", "income", "country", "score", "contact"]


def test_error_if_exists_refuses_and_overwrite_replaces(weir, tmp_path, events_dir):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", CLEAN_JOB.format(src=events_dir, out=out, mode="error_if_exists"))
    weir("run", job, check=0)
    first = json.loads((out / "_weir" / "manifest.json").read_text())
    again = weir("run", job, check=2)
    assert "already exists" in again.stderr and "overwrite" in again.stderr
    assert json.loads((out / "_weir" / "manifest.json").read_text()) == first, "the refused run changed nothing"
    over = write_job(tmp_path / "over.toml", CLEAN_JOB.format(src=events_dir, out=out, mode="overwrite"))
    weir("run", over, "-w", "3", check=0)
    second = assert_committed(out, clean_reference(events_dir).num_rows)
    assert second["run_id"] != first["run_id"]
    assert all(second["run_id"] in f["path"] for f in second["files"]), "no part file of the first run is left"


def test_variables_fill_uris(weir, tmp_path, events_dir):
    job = write_job(
        tmp_path / "job.toml",
        f'name = "vars"\n[source]\nuri = "{events_dir}"\ncolumns = ["id"]\n[sink]\nuri = "{tmp_path}/out/date={{{{ds}}}}/{{{{region}}}}"\n',
    )
    weir("run", job, "--var", "ds=2024-02-29", "--var", "region=eu", check=0)
    out = tmp_path / "out" / "date=2024-02-29" / "eu"
    assert read_output(out).num_rows == 20_333
    missing = weir("run", write_job(tmp_path / "bad.toml", job.read_text().replace("{{region}}", "{{zone}}")), "--var", "ds=2024-02-29", check=2)
    assert "zone" in missing.stderr and "line 6" in missing.stderr


def test_validate_checks_without_running(weir, tmp_path, events_dir):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", CLEAN_JOB.format(src=events_dir, out=out, mode="error_if_exists"))
    result = weir("validate", job, check=0)
    assert "valid" in result.stdout and "20333 rows" in result.stdout and "contact: Utf8" in result.stdout
    assert not out.exists()


def test_ls_head_and_schema_read_an_output(weir, tmp_path, events_dir):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", CLEAN_JOB.format(src=events_dir, out=out, mode="error_if_exists"))
    weir("run", job, "-w", "1", check=0)
    want = clean_reference(events_dir)

    listing = weir("ls", out, check=0).stdout
    assert "_SUCCESS" in listing and "_weir/manifest.json" in listing
    assert f"{want.num_rows} rows" in listing and "committed" in listing

    schema = weir("schema", f"file://{out}", check=0).stdout
    assert "id: Int64" in schema and "score: Float64" in schema
    assert f"{want.num_rows} rows" in schema

    head = weir("head", out, "-n", "3", check=0).stdout
    first = want.slice(0, 3)["id"].to_pylist()
    rows = [line for line in head.splitlines() if line.startswith("|") and not line.startswith("| id")]
    assert [int(r.split("|")[1]) for r in rows] == first
    assert not math.isnan(float(rows[0].split("|")[2]))


@pytest.mark.parametrize("shape", [["-w", "2"], ["-p", "2", "-w", "1"]], ids=shape_id)
def test_relative_paths_are_relative_to_the_job_file(weir, tmp_path, events_dir, shape):
    """As cron runs a job: from another working directory. The source, the sink and a
    `fitted` output named relative to the job file's folder are found there."""
    project = tmp_path / "project"
    shutil.copytree(events_dir, project / "data" / "events")
    (project / "jobs").mkdir()
    job = write_job(
        project / "jobs" / "clean.toml",
        'name = "relative"\n[source]\nuri = "../data/events/"\n[[step]]\nop = "standardize"\ncolumns = ["income"]\n'
        '[sink]\nuri = "../out/first/"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    weir("run", job, *shape, cwd=elsewhere, check=0)
    assert list(elsewhere.iterdir()) == []
    assert_committed(project / "out" / "first", read_inputs(events_dir).num_rows)
    # A later job reuses the fitted parameters by a path relative to its own file.
    reuse = write_job(
        project / "jobs" / "reuse.toml",
        'name = "reuse"\n[source]\nuri = "../data/events/"\n[[step]]\nop = "standardize"\ncolumns = ["income"]\n'
        'fitted = "../out/first/"\n[sink]\nuri = "../out/second/"\n',
    )
    weir("run", reuse, *shape, cwd=elsewhere, check=0)
    first = read_output(project / "out" / "first").sort_by("id")
    second = read_output(project / "out" / "second").sort_by("id")
    assert first.equals(second)
    # `weir validate` from yet another folder agrees.
    assert "is valid" in weir("validate", reuse, cwd=tmp_path, check=0).stdout
    # Parameters are reused only from a committed output.
    (project / "out" / "first" / "_SUCCESS").unlink()
    refused = weir("run", reuse, *shape, "--var", "x=1", cwd=elsewhere)
    assert refused.returncode == 2 and "not a committed output" in refused.stderr, refused.stderr


def test_head_tells_null_from_the_empty_string(weir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "name": ["x", None, ""]}), src / "a.parquet")
    head = weir("head", src / "a.parquet", check=0).stdout
    cells = {int(line.split("|")[1]): line.split("|")[2].strip() for line in head.splitlines() if line.startswith("|") and "id" not in line}
    assert cells == {1: "x", 2: "null", 3: ""}, head


def test_source_columns_take_globs_like_steps_do(weir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    table = pa.table({"id": [1, 2], "f_2": [0.5, 1.5], "b": ["x", "y"], "f_1": [2.0, 3.0]})
    pq.write_table(table, src / "a.parquet")
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", f'name = "globs"\n[source]\nuri = "{src}"\ncolumns = ["id", "f_*", "f_1"]\n[sink]\nuri = "{out}"\n')
    weir("run", job, check=0)
    got = read_output(out)
    assert got.column_names == ["id", "f_2", "f_1"], "a glob expands in the file's column order, each column once"
    assert got.equals(table.select(["id", "f_2", "f_1"]))
    none = write_job(tmp_path / "none.toml", f'name = "globs"\n[source]\nuri = "{src}"\ncolumns = ["g_*"]\n[sink]\nuri = "{tmp_path / "o2"}"\n')
    proc = weir("run", none, check=2)
    assert "g_*" in proc.stderr and "f_1" in proc.stderr, proc.stderr


def test_logs_and_progress_lines_off_a_terminal(weir, tmp_path, events_dir):
    """As under cron: stderr is not a terminal. RUST_LOG=info shows what the run does;
    --log-format json makes those lines JSON; progress lines come every
    --progress-every-s (0: at every update)."""
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", f'name = "logged"\n[source]\nuri = "{events_dir}"\nmax_shard_rows = 2000\n[sink]\nuri = "{out}"\n')
    env = dict(os.environ, RUST_LOG="info")
    proc = weir("run", job, "-w", "2", "--progress-every-s", "0", env=env, check=0)
    lines = proc.stderr.splitlines()
    assert any("planned" in line and "shards=" in line for line in lines), proc.stderr
    assert any("committed" in line and f"rows={read_inputs(events_dir).num_rows}" in line for line in lines), proc.stderr
    progress = [line for line in lines if line.startswith("weir: progress: ")]
    assert progress and all("shards (" in line and "rows/s" in line for line in progress), proc.stderr

    quiet = weir("run", job, "-w", "2", "--var", "x=1", check=2)  # default: warnings only, no info lines
    assert "planned" not in quiet.stderr

    proc = weir("run", job, "-w", "2", "--log-format", "json", env=dict(env), check=2)  # exists: refused, but logged
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(event["fields"].get("message") == "planned" and event["level"] == "INFO" for event in events), proc.stderr


def test_mostly_distinct_columns_are_written_without_a_dictionary_and_every_value_reads_back(weir, tmp_path):
    # Unique ids and free text get plain encoding; repeated codes and labels keep their
    # dictionary (judged on each part file's first batch). The file spans many 1 MiB
    # encoder buffers and several row groups; pyarrow reads every value back.
    rng = np.random.default_rng(7)
    rows = 300_000
    src = tmp_path / "src"
    src.mkdir()
    want = pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "code": pa.array(rng.integers(0, 6, rows).astype(np.int32), mask=rng.random(rows) < 0.1),
            "label": pa.array([f"class-{i}" for i in rng.integers(0, 4, rows)]),
            "note": pa.array([f"note {i} {v:.6f}" for i, v in enumerate(rng.random(rows))]),
            "x": pa.array(rng.normal(size=rows)),
        }
    )
    pq.write_table(want, src / "data.parquet", row_group_size=100_000)
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", f'name = "copy"\n[source]\nuri = "{src}"\n[sink]\nuri = "{out}"\nrow_group_rows = 65536\n')
    weir("run", job, "-w", "1", check=0)
    got = read_output(out)
    assert got.schema.equals(want.schema, check_metadata=False)
    assert got.equals(want)
    (part,) = data_files(out)
    meta = pq.ParquetFile(part).metadata
    assert meta.num_row_groups == 5
    for group in range(meta.num_row_groups):
        columns = {meta.row_group(group).column(i).path_in_schema: meta.row_group(group).column(i) for i in range(meta.num_columns)}
        assert not columns["id"].has_dictionary_page and not columns["note"].has_dictionary_page
        assert not columns["x"].has_dictionary_page
        assert columns["code"].has_dictionary_page and columns["label"].has_dictionary_page


def test_compression_level_is_applied_and_every_level_reads_back(weir, tmp_path):
    # A compressible text column and float noise: a higher zstd level must give a smaller
    # file than a negative one, and pyarrow reads every value back from each.
    rng = np.random.default_rng(11)
    rows = 200_000
    src = tmp_path / "src"
    src.mkdir()
    want = pa.table(
        {
            "id": pa.array(np.arange(rows, dtype=np.int64)),
            "note": pa.array([f"order {i % 977} shipped to depot {i % 13}" for i in range(rows)]),
            "x": pa.array(rng.normal(size=rows)),
        }
    )
    pq.write_table(want, src / "data.parquet")
    sizes = {}
    for codec, level in [("zstd", -1), ("zstd", 19), ("gzip", 9), ("brotli", 11)]:
        out = tmp_path / f"out-{codec}{level}"
        job = write_job(tmp_path / f"{codec}{level}.toml", f'name = "levels"\n[source]\nuri = "{src}"\n[sink]\nuri = "{out}"\ncompression = "{codec}"\ncompression_level = {level}\n')
        weir("run", job, "-w", "1", check=0)
        got = read_output(out)
        assert got.equals(want), (codec, level)
        (part,) = data_files(out)
        meta = pq.ParquetFile(part).metadata
        assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {codec.upper()}
        sizes[(codec, level)] = part.stat().st_size
    assert sizes[("zstd", 19)] < 0.9 * sizes[("zstd", -1)], sizes


@pytest.mark.parametrize(
    "sink, message",
    [
        ('compression = "snappy"\ncompression_level = 3', "snappy has no levels"),
        ("compression_level = 23", "sink.compression_level 23: zstd takes levels -131072 to 22"),
        ('compression = "gzip"\ncompression_level = -1', "sink.compression_level -1: gzip takes levels 0 to 9"),
        ('compression = "brotli"\ncompression_level = 12', "sink.compression_level 12: brotli takes levels 0 to 11"),
    ],
)
def test_a_compression_level_the_codec_does_not_take_is_refused_before_running(weir, tmp_path, events_dir, sink, message):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", f'name = "levels"\n[source]\nuri = "{events_dir}"\n[sink]\nuri = "{out}"\n{sink}\n')
    for command in ("validate", "run"):
        result = weir(command, job, check=2)
        assert message in result.stderr and "levels" in result.stderr, result.stderr
    assert not out.exists()
