"""Columns a job passes through unchanged are copied into the part files as the source
encoded them (`sink.copy_unchanged_columns`, connectors/src/chunk_copy.rs): the values read
back by pyarrow and DuckDB equal the source's, the scores equal onnxruntime's Python API,
the copied chunks are the source's own (pyarrow's metadata: same sizes, encodings and
codec), and every case that must encode instead (another codec, a level, a filter, sliced
row groups, the option off) does."""

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import read_output, write_job
from helpers import SCORE_FEATURES, helper_mlp, onnx_reference

TOL = 1e-5
# Rows per source file; the source's row groups hold 500 rows (the last of a file fewer).
FILE_ROWS = [2000, 1700, 2500]
PASSED = ["id", "name", "n", "flag", "ts", *SCORE_FEATURES]


def source_table() -> pa.Table:
    rng = np.random.default_rng(11)
    rows = sum(FILE_ROWS)
    x = rng.normal(size=(rows, len(SCORE_FEATURES)))
    names = [None if i % 7 == 0 else f"name-{i % 97}" for i in range(rows)]
    numbers = pa.array([None if i % 5 == 0 else int(v) for i, v in enumerate(rng.integers(-1000, 1000, rows))], pa.int32())
    return pa.table(
        {
            "id": np.arange(rows),
            "name": pa.array(names, pa.string()),
            "n": numbers,
            "flag": rng.random(rows) < 0.3,
            "ts": pa.array(1_700_000_000_000 + np.arange(rows) * 61_000, pa.timestamp("ms", tz="UTC")),
            **{name: x[:, j] for j, name in enumerate(SCORE_FEATURES)},
        }
    )


def write_source(table: pa.Table, directory, codecs=("zstd", "zstd", "zstd")):
    directory.mkdir()
    start = 0
    for index, (rows, codec) in enumerate(zip(FILE_ROWS, codecs)):
        pq.write_table(table.slice(start, rows), directory / f"part-{index}.parquet", row_group_size=500, compression=codec)
        start += rows
    return directory


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    table = source_table()
    return write_source(table, tmp_path_factory.mktemp("copy") / "src"), table


def job(tmp_path, src, model, sink="", steps="", source_extra="", score_extra=""):
    return write_job(
        tmp_path / "job.toml",
        f'name = "copy"\n[source]\nuri = "{src}"\n{source_extra}\n{steps}\n'
        f'[[step]]\nop = "score"\nmodel = "{model}"\ninputs = {{ x = {SCORE_FEATURES!r} }}\n'
        f'outputs = {{ y = "p" }}\n{score_extra}\n'
        f'[sink]\nuri = "{tmp_path / "out"}"\nmode = "overwrite"\nrow_group_rows = 500\n{sink}\n'.replace("'", '"'),
    )


def source_chunks(src):
    """Each source row group's column chunks by (first id, rows): pyarrow's metadata."""
    chunks = {}
    for path in sorted(src.glob("*.parquet")):
        metadata = pq.ParquetFile(path).metadata
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            columns = {group.column(c).path_in_schema: group.column(c) for c in range(group.num_columns)}
            chunks[(columns["id"].statistics.min, group.num_rows)] = columns
    return chunks


def output_groups(out):
    """Every row group of the committed output: (first id, rows, its chunks by column)."""
    groups = []
    for path in sorted(p for p in out.glob("*.parquet")):
        metadata = pq.ParquetFile(path).metadata
        for g in range(metadata.num_row_groups):
            group = metadata.row_group(g)
            columns = {group.column(c).path_in_schema: group.column(c) for c in range(group.num_columns)}
            groups.append((columns["id"].statistics.min, group.num_rows, columns))
    return groups


def same_chunk(a, b) -> bool:
    """Whether two chunks are alike in every property their footers record (encodings as a
    set: parquet-rs stores them as one)."""

    def properties(c):
        return (c.total_compressed_size, c.total_uncompressed_size, set(c.encodings), c.compression, c.has_dictionary_page)

    return properties(a) == properties(b)


def check_values(tmp_path, model, expected: pa.Table):
    """The output equals `expected` in every passed column, and its scores onnxruntime's."""
    result = read_output(tmp_path / "out").sort_by("id")
    assert result.num_rows == expected.num_rows
    assert result.select(PASSED).equals(expected.select(PASSED))
    x = np.column_stack([expected.column(name).to_numpy() for name in SCORE_FEATURES])
    want = onnx_reference(model, x)["y"].reshape(len(x), -1)
    got = np.column_stack([result.column(f"p_{k}").to_numpy() for k in range(want.shape[1])])
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)
    # DuckDB reads the same values from the part files.
    files = [str(p) for p in (tmp_path / "out").glob("*.parquet")]
    count, numbers, names, first, last, flags = duckdb.sql(
        f"select count(*), sum(n), count(name), min(ts), max(ts), sum(flag::int) from read_parquet({files!r})"
    ).fetchall()[0]
    assert count == expected.num_rows
    assert numbers == pc.sum(expected.column("n")).as_py()
    assert names == expected.column("name").drop_null().length()
    assert flags == pc.sum(expected.column("flag").cast(pa.int64())).as_py()
    assert first.timestamp() == pc.min(expected.column("ts")).as_py().timestamp()
    assert last.timestamp() == pc.max(expected.column("ts")).as_py().timestamp()


@pytest.mark.parametrize("shape", [["-w", "1"], ["-p", "2", "-w", "2"]], ids=["1worker", "2procs-x-2workers"])
def test_unchanged_columns_are_the_source_chunks_and_read_back_equal(weir, tmp_path, source, shape):
    src, table = source
    model = helper_mlp(tmp_path / "m.onnx")
    weir("run", job(tmp_path, src, model), *shape, check=0)
    check_values(tmp_path, model, table)
    chunks = source_chunks(src)
    groups = output_groups(tmp_path / "out")
    # Every output row group is one source row group, every passed column its chunk.
    assert sorted((first, rows) for first, rows, _ in groups) == sorted(chunks)
    for first, rows, columns in groups:
        for name in PASSED:
            assert same_chunk(columns[name], chunks[(first, rows)][name]), (first, name)
        for name in ("p_0", "p_1", "p_2"):
            assert columns[name].compression == "ZSTD" and not columns[name].has_dictionary_page


@pytest.mark.parametrize(
    "sink, steps, source_extra, score_extra, codec, keep",
    [
        ("copy_unchanged_columns = false", "", "", "", "ZSTD", 1.0),
        ('compression = "snappy"', "", "", "", "SNAPPY", 1.0),
        ("compression_level = 3", "", "", "", "ZSTD", 1.0),
        ("", '[[step]]\nop = "filter"\nexpr = "id >= 0"', "", "", "ZSTD", 1.0),
        ("", '[[step]]\nop = "filter"\nexpr = "f0 > -0.5"', "", "", "ZSTD", None),
        ("", "", "max_shard_rows = 150", "", "ZSTD", 1.0),
        ("", "", "", 'on_null = "skip"', "ZSTD", 1.0),
    ],
    ids=["turned-off", "other-codec", "a-level", "a-filter-keeping-all", "a-filter", "sliced-row-groups", "score-may-skip-rows"],
)
def test_columns_are_encoded_when_they_cannot_be_copied(weir, tmp_path, source, sink, steps, source_extra, score_extra, codec, keep):
    src, table = source
    model = helper_mlp(tmp_path / "m.onnx")
    job_file = job(tmp_path, src, model, sink=sink, steps=steps, source_extra=source_extra, score_extra=score_extra)
    weir("run", job_file, "-w", "1", check=0)
    expected = table if keep else table.filter(pc.greater(table.column("f0"), -0.5))
    check_values(tmp_path, model, expected)
    chunks = source_chunks(src)
    for first, rows, columns in output_groups(tmp_path / "out"):
        # Weir writes float columns without a dictionary; the source (pyarrow) with one.
        assert not columns["f0"].has_dictionary_page
        assert all(columns[name].compression == codec for name in columns)
        source_group = chunks.get((first, rows))
        assert source_group is None or not same_chunk(columns["f0"], source_group["f0"])


def test_a_source_of_two_codecs_copies_the_chunks_of_the_sinks_codec_and_encodes_the_others(weir, tmp_path):
    table = source_table()
    src = write_source(table, tmp_path / "src", codecs=("zstd", "snappy", "zstd"))
    model = helper_mlp(tmp_path / "m.onnx")
    weir("run", job(tmp_path, src, model), "-w", "1", check=0)
    check_values(tmp_path, model, table)
    chunks = source_chunks(src)
    snappy_ids = range(FILE_ROWS[0], FILE_ROWS[0] + FILE_ROWS[1])
    copied = encoded = 0
    for first, rows, columns in output_groups(tmp_path / "out"):
        assert all(columns[name].compression == "ZSTD" for name in columns)
        if first in snappy_ids:
            encoded += rows
            assert not columns["f0"].has_dictionary_page
        else:
            copied += rows
            assert all(same_chunk(columns[name], chunks[(first, rows)][name]) for name in PASSED)
    assert (copied, encoded) == (FILE_ROWS[0] + FILE_ROWS[2], FILE_ROWS[1])


def test_columns_dropped_before_the_score_leave_the_others_copied(weir, tmp_path, source):
    src, table = source
    model = helper_mlp(tmp_path / "m.onnx")
    steps = '[[step]]\nop = "drop"\ncolumns = ["name", "flag"]'
    weir("run", job(tmp_path, src, model, steps=steps), "-w", "1", check=0)
    result = read_output(tmp_path / "out").sort_by("id")
    kept = [name for name in PASSED if name not in ("name", "flag")]
    assert result.column_names == [*kept, "p_0", "p_1", "p_2"]
    assert result.select(kept).equals(table.select(kept))
    chunks = source_chunks(src)
    groups = output_groups(tmp_path / "out")
    assert sorted((first, rows) for first, rows, _ in groups) == sorted(chunks)
    for first, rows, columns in groups:
        assert all(same_chunk(columns[name], chunks[(first, rows)][name]) for name in kept)
