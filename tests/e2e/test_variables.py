"""`--var` values are data, never TOML: a value cannot change a job's structure (issue: a
crafted `ds` once switched a job to `mode = "overwrite"` and deleted a committed output),
and an oversized value is refused without being printed back."""

import hashlib
import json

import pyarrow.parquet as pq

from conftest import read_inputs, write_job

JOB = """name = "vars-safety"
[source]
uri = "{src}"
columns = ["id", "age"]
[sink]
uri = "{out}/date={{{{ds}}}}"
"""


def digest(directory):
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_a_value_cannot_switch_the_job_to_overwrite(weir, tmp_path, events_dir):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", JOB.format(src=events_dir, out=out))
    weir("run", job, "--var", "ds=2024", check=0)
    committed = out / "date=2024"
    before = digest(committed)
    evil = '2024"\nmode = "overwrite"\n#'
    proc = weir("run", job, "--var", f"ds={evil}")
    assert digest(committed) == before, "the committed output was not touched"
    # The value stayed inside the URI string: the run (if it ran) wrote to its own, oddly
    # named directory with the job's own mode, error_if_exists.
    assert proc.returncode in (0, 2), proc.stderr
    again = weir("run", job, "--var", f"ds={evil}")
    if proc.returncode == 0:
        assert again.returncode == 2 and "already exists" in again.stderr, again.stderr
    expected = read_inputs(events_dir).select(["id", "age"]).sort_by("id")
    assert pq.read_table(committed).sort_by("id").equals(expected)


def test_a_huge_value_is_refused_briefly(weir, tmp_path, events_dir):
    job = write_job(tmp_path / "job.toml", JOB.format(src=events_dir, out=tmp_path / "out"))
    proc = weir("run", job, "--var", "ds=" + "x" * 100_000, check=2)
    assert "100000 characters" in proc.stderr and len(proc.stderr) < 1_000, proc.stderr[:300]
    assert not (tmp_path / "out").exists()


def test_variables_stand_only_inside_strings(weir, tmp_path, events_dir):
    text = JOB.format(src=events_dir, out=tmp_path / "out").replace('columns = ["id", "age"]', "batch_size = {{n}}")
    job = write_job(tmp_path / "job.toml", text)
    proc = weir("run", job, "--var", "n=512", "--var", "ds=d", check=2)
    assert "line 4" in proc.stderr and "only inside quoted strings" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_values_with_toml_syntax_stay_data(weir, tmp_path, events_dir):
    """A value full of TOML syntax lands verbatim in the string it stands in."""
    out = tmp_path / "out"
    value = "a'b\"c] [x]\\d = 1 # e"
    job = write_job(tmp_path / "job.toml", JOB.format(src=events_dir, out=out).replace("date={{ds}}", "{{ds}}"))
    weir("run", job, "--var", f"ds={value}", check=0)
    written = [p for p in out.iterdir()]
    assert [p.name for p in written] == [value], written
    expected = read_inputs(events_dir).select(["id", "age"]).sort_by("id")
    assert pq.read_table(written[0]).sort_by("id").equals(expected)


def test_the_manifest_records_the_variables(weir, tmp_path, events_dir):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", JOB.format(src=events_dir, out=out))
    weir("run", job, "--var", "ds=2024-02-29", "--var", "region=eu west", "--var", "run_id=R7", check=0)
    manifest = json.loads((out / "date=2024-02-29" / "_weir" / "manifest.json").read_text())
    assert manifest["run_id"] == "R7"
    assert manifest["variables"] == {
        "ds": "2024-02-29",
        "region": "eu west",
        "run_id": "R7",
        # Derived from ds (a schedule's tick sets them otherwise): a leap day's interval.
        "ds_nodash": "20240229",
        "interval_start": "2024-02-29T00:00:00Z",
        "interval_end": "2024-03-01T00:00:00Z",
        "logical_time": "2024-03-01T00:00:00Z",
    }


TYPED = """name = "typed"
[vars]
ds = {{ type = "date" }}
min_age = {{ type = "int", default = "18" }}
[source]
uri = "{src}"
columns = ["id", "age"]
[[step]]
op = "filter"
expr = "age >= {{{{min_age}}}}"
[sink]
uri = "{out}/date={{{{ds}}}}"
"""


def test_declared_variables_refuse_a_mistyped_name_or_a_malformed_value_before_anything_is_read(weir, tmp_path, events_dir):
    from helpers import Service, expect_error

    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", TYPED.format(src=events_dir, out=out))
    for args, message in [
        (["--var", "dt=2026-12-06"], "unknown variable 'dt'"),
        (["--var", "ds=2026/12/06"], "'ds' must be a date (YYYY-MM-DD)"),
        (["--var", "ds=2026-12-06", "--var", "min_age=x"], "'min_age' must be an integer"),
    ]:
        proc = weir("run", job, *args, check=2)
        assert message in proc.stderr, proc.stderr
    assert not out.exists()
    # The default min_age applies (the rows counted from the input with pyarrow).
    weir("run", job, "--var", "ds=2026-12-06", check=0)
    got = pq.read_table(out / "date=2026-12-06")
    ages = read_inputs(events_dir).column("age").to_pylist()
    assert got.num_rows == sum(1 for a in ages if a is not None and a >= 18)

    # The job service refuses them when the run is submitted, not after retries.
    service = Service(tmp_path.resolve(), []).start()
    try:
        for vars_, message in [({"dt": "2026-12-06"}, "unknown variable 'dt'"), ({"ds": "2026/12/06"}, "must be a date")]:
            error = expect_error(service.admin.post("/v1/runs", json={"definition": job.read_text(), "vars": vars_}), 422)
            assert message in error, error
    finally:
        service.close()
