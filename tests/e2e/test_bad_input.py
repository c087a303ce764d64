"""Bad input: each case exits 2 with a message naming the culprit, and commits nothing."""

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import data_files, make_events, write_job

JOB = """
name = "bad-input"

[source]
uri = "{src}"

{steps}

[sink]
uri = "{out}"
"""


def run_bad(weir, tmp_path, src, steps="", job_text=None):
    out = tmp_path / "out"
    text = job_text if job_text is not None else JOB.format(src=src, out=out, steps=steps)
    result = weir("run", write_job(tmp_path / "job.toml", text), "-w", "2", check=2)
    assert result.stderr.startswith("weir: error:"), result.stderr
    assert "panicked" not in result.stderr
    assert not (out / "_SUCCESS").exists()
    assert not (out / "_weir").exists()
    assert not out.exists() or data_files(out) == [], "no part file is left behind"
    return result.stderr


def test_truncated_parquet_names_the_file(weir, tmp_path, events_dir):
    victim = data_files(events_dir)[1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    err = run_bad(weir, tmp_path, events_dir)
    assert victim.name in err and "Parquet" in err


def test_garbage_in_a_row_group_names_file_and_row_group(weir, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    table = pa.table({"x": pa.array(np.arange(40_000, dtype=np.int64))})
    pq.write_table(table, src / "a.parquet", row_group_size=10_000, compression="none")
    meta = pq.ParquetFile(src / "a.parquet").metadata
    column = meta.row_group(2).column(0)
    data = bytearray((src / "a.parquet").read_bytes())
    start = column.data_page_offset
    data[start : start + 64] = b"\xff" * 64  # smash the page header of row group 2
    (src / "a.parquet").write_bytes(bytes(data))
    err = run_bad(weir, tmp_path, src)
    assert "a.parquet" in err and "row group 2" in err


def test_schema_conflict_names_both_files(weir, tmp_path, events_dir):
    rng = np.random.default_rng(1)
    other = make_events(rng, 0, 10).set_column(1, "age", pa.array(["x"] * 10))
    pq.write_table(other, events_dir / "part-9-conflict.parquet")
    err = run_bad(weir, tmp_path, events_dir)
    assert "part-0.parquet" in err and "part-9-conflict.parquet" in err and "'age'" in err


def test_unknown_column_in_a_step(weir, tmp_path, events_dir):
    err = run_bad(weir, tmp_path, events_dir, steps='[[step]]\nop = "select"\ncolumns = ["id", "agee"]')
    assert "step 1 (select)" in err and "'agee'" in err and "age" in err


def test_bad_filter_expression_points_at_the_character(weir, tmp_path, events_dir):
    err = run_bad(weir, tmp_path, events_dir, steps='[[step]]\nop = "filter"\nexpr = "age >= and income > 0"')
    assert "step 1 (filter)" in err
    lines = err.splitlines()
    expr_line = next(i for i, line in enumerate(lines) if "age >= and income > 0" in line)
    caret = lines[expr_line + 1]
    assert caret.index("^") == lines[expr_line].index("and"), "the caret stands under 'and'"


def test_bad_toml_gives_line_and_column(weir, tmp_path, events_dir):
    err = run_bad(weir, tmp_path, events_dir, job_text='name = "x"\n[source]\nuri = "unterminated\n')
    assert "job.toml" in err and "line 3" in err


def test_unknown_op_and_unknown_field(weir, tmp_path, events_dir):
    err = run_bad(weir, tmp_path, events_dir, steps='[[step]]\nop = "normalise"\ncolumns = ["age"]')
    assert "normalise" in err
    steps = '[[step]]\nop = "filter"\nexpr = "age > 0"\n\n[[step]]\nop = "select"\ncolumns = ["id"]\n  expr = "x"'
    text = JOB.format(src=events_dir, out=tmp_path / "out", steps=steps)
    err = run_bad(weir, tmp_path, events_dir, job_text=text)
    # The mistyped field's own line (the select's `expr`, not the filter's), not its table's.
    line = text.splitlines().index('  expr = "x"') + 1
    assert f"line {line}, column 3" in err and f'{line} |   expr = "x"' in err, err
    assert "unknown field `expr`, expected `columns`" in err, err


def test_a_source_with_no_data_yet_is_input_not_ready_exit_4(weir, tmp_path):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", JOB.format(src=tmp_path / "nowhere", out=out, steps=""))
    proc = weir("run", job, check=4)
    assert "input not ready" in proc.stderr and "nowhere" in proc.stderr and "panicked" not in proc.stderr, proc.stderr
    assert not out.exists()


def test_sink_inside_source_is_refused(weir, tmp_path, events_dir):
    text = JOB.format(src=events_dir, out=events_dir / "out", steps="")
    err = run_bad(weir, tmp_path, events_dir, job_text=text)
    assert "overlap" in err


@pytest.mark.parametrize("shape", [["-w", "2"], ["-p", "2", "-w", "1"]], ids=["threads", "processes"])
def test_a_value_that_cannot_be_cast_fails_the_run_and_leaves_nothing(weir, tmp_path, events_dir, shape):
    out = tmp_path / "out"
    text = JOB.format(src=events_dir, out=out, steps='[[step]]\nop = "cast"\ncolumns = { score = "float64" }')
    result = weir("run", write_job(tmp_path / "job.toml", text), *shape, check=2)
    err = result.stderr
    assert "'score'" in err and "'n/a'" in err and "row group" in err and ".parquet" in err and "step 1 (cast)" in err
    assert not (out / "_SUCCESS").exists() and not (out / "_weir").exists()
    assert not out.exists() or data_files(out) == []
    # A clean copy of the input with a fixed job works afterwards.
    shutil.rmtree(out, ignore_errors=True)
    weir("run", write_job(tmp_path / "ok.toml", text.replace('score = "float64"', 'age = "float64"')), *shape, check=0)


def test_a_file_with_two_columns_of_one_name_is_refused_by_run_head_and_validate(weir, tmp_path):
    src = tmp_path / "dup"
    src.mkdir()
    table = pa.Table.from_arrays([pa.array([1, 2, 3]), pa.array([4.0, 5.0, 6.0])], names=["x", "x"])
    pq.write_table(table, src / "dup.parquet")
    assert pq.read_schema(src / "dup.parquet").names == ["x", "x"]  # pyarrow writes it as such
    err = run_bad(weir, tmp_path, src)
    assert "dup.parquet" in err and "two columns named 'x'" in err
    job = write_job(tmp_path / "job.toml", JOB.format(src=src, out=tmp_path / "out", steps=""))
    for args in (["validate", job], ["head", src], ["schema", src]):
        proc = weir(*args, check=2)
        assert "two columns named 'x'" in proc.stderr and "panicked" not in proc.stderr, proc.stderr


def test_fitting_a_column_that_a_later_step_masks_is_refused(weir, tmp_path, events_dir):
    steps = (
        '[[step]]\nop = "impute"\ncolumns = ["email"]\nstrategy = "most_frequent"\n'
        '[[step]]\nop = "mask"\ncolumns = ["email"]\nmethod = "redact"\n'
    )
    err = run_bad(weir, tmp_path, events_dir, steps=steps)
    assert "step 1 (impute)" in err and "'email'" in err and "step 2" in err, err
    assert "@example.com" not in err


@pytest.mark.parametrize("terms", [3_000, 9_000])
def test_a_filter_with_thousands_of_terms_is_refused_not_a_crash(weir, tmp_path, events_dir, terms):
    expr = " or ".join(f"id = {i}" for i in range(terms))
    steps = f'[[step]]\nop = "filter"\nexpr = "{expr}"'
    err = run_bad(weir, tmp_path, events_dir, steps=steps)
    assert "at most 1000" in err and "in (" in err, err[-500:]
    job = write_job(tmp_path / "v.toml", JOB.format(src=events_dir, out=tmp_path / "v", steps=steps))
    assert "at most 1000" in weir("validate", job, check=2).stderr


def test_a_filter_with_hundreds_of_terms_runs_at_every_shape(weir, tmp_path, events_dir):
    wanted = list(range(0, 20_333, 41))[:900]
    expr = " or ".join(f"id = {i}" for i in wanted)
    for shape in (["-w", "2"], ["-p", "2", "-w", "1"]):
        out = tmp_path / f"out{len(shape)}"
        text = JOB.format(src=events_dir, out=out, steps=f'[[step]]\nop = "filter"\nexpr = "{expr}"')
        weir("run", write_job(tmp_path / f"job{len(shape)}.toml", text), *shape, check=0)
        got = sorted(pq.read_table(out, columns=["id"])["id"].to_pylist())
        assert got == wanted


def test_a_float64_that_overflows_float32_fails_the_cast_and_null_nulls_it(weir, tmp_path):
    src = tmp_path / "big-floats"
    src.mkdir()
    values = [1.5, 3.4e38, 1e39, None, -2.0e300]
    pq.write_table(pa.table({"id": list(range(5)), "x": pa.array(values, pa.float64()), "gone": pa.nulls(5)}), src / "x.parquet")
    steps = '[[step]]\nop = "cast"\ncolumns = { x = "float32", gone = "int64" }'
    err = run_bad(weir, tmp_path, src, steps=steps)
    assert "'x'" in err and "1e39" in err and "float" in err.lower(), err
    out = tmp_path / "nulled"
    text = JOB.format(src=src, out=out, steps=steps + '\non_error = "null"')
    weir("run", write_job(tmp_path / "null.toml", text), check=0)
    got = pq.read_table(out).sort_by("id")
    expected = [v if v is None or abs(v) <= float(np.finfo(np.float32).max) else None for v in values]
    assert got["x"].type == pa.float32() and got["gone"].type == pa.int64() and got["gone"].null_count == 5
    assert [None if v is None else float(np.float32(v)) for v in expected] == got["x"].to_pylist()


def test_dropping_every_column_is_refused(weir, tmp_path, events_dir):
    err = run_bad(weir, tmp_path, events_dir, steps='[[step]]\nop = "drop"\ncolumns = ["*"]')
    assert "step 1 (drop)" in err and "no column is left" in err, err


@pytest.mark.parametrize("case", ["sink-is-a-file", "name-too-long", "symlink-loop-in-source"])
def test_filesystem_mistakes_are_bad_input(weir, tmp_path, events_dir, case):
    src, out = events_dir, tmp_path / "out"
    if case == "sink-is-a-file":
        out.write_text("not a directory")
    elif case == "name-too-long":
        out = tmp_path / ("n" * 300)
    else:
        (events_dir / "loop").symlink_to("loop")
    job = write_job(tmp_path / "job.toml", JOB.format(src=src, out=out, steps=""))
    proc = weir("run", job, check=2)
    assert "panicked" not in proc.stderr and "job 'bad-input'" in proc.stderr, proc.stderr
    assert (str(out)[:80] if case != "symlink-loop-in-source" else "loop") in proc.stderr, proc.stderr
    if case == "sink-is-a-file":
        assert "it is a file" in proc.stderr and out.read_text() == "not a directory"


def test_a_sink_on_a_read_only_file_system_is_bad_input(weir, tmp_path, events_dir):
    """A real read-only mount (tmpfs, mounted here as root): exit 2 naming the sink."""
    mount = tmp_path / "ro"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as error:
        pytest.skip(f"cannot mount a read-only tmpfs here: {error}")
    try:
        out = mount / "out"
        job = write_job(tmp_path / "job.toml", JOB.format(src=events_dir, out=out, steps=""))
        proc = weir("run", job, check=2)
        assert "panicked" not in proc.stderr and "job 'bad-input'" in proc.stderr, proc.stderr
        assert "read-only" in proc.stderr.lower() and str(mount) in proc.stderr, proc.stderr
        assert list(mount.iterdir()) == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)


FUZZ_CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus" / "parquet"


@pytest.mark.parametrize(
    "seed, expected",
    [
        # The parquet crate panicked decoding this page (a slice past its end).
        ("regression-decoder-panic.parquet", ["row group 0", "corrupt data"]),
        # A column chunk at a negative offset: the parquet crate asserted.
        ("regression-negative-chunk-offset.parquet", ["'gone'", "row group 0", "lies outside the file"]),
        # The footer's row count disagrees with its row groups' (22 against 40).
        ("regression-row-count-mismatch.parquet", ["holds 22 rows", "hold 40"]),
    ],
)
def test_corrupt_files_found_by_fuzzing_are_errors_not_crashes(weir, tmp_path, seed, expected):
    """Files the fuzz harness found (committed as its regression seeds): each made Weir
    panic or read another row count than the footer's; now each is a clean exit 2 naming
    the file, from `run` and from `head`."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(FUZZ_CORPUS / seed, src / "a.parquet")
    err = run_bad(weir, tmp_path, src)
    assert "a.parquet" in err and all(part in err for part in expected), err
    head = weir("head", src / "a.parquet", "-n", "100", check=2)
    assert "panicked" not in head.stderr and "a.parquet" in head.stderr, head.stderr
