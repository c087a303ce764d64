"""Shared fixtures for Weir's end-to-end tests.

The tests run the real `weir` binary (``WEIR_BIN``, default ``target/debug/weir``) on
Parquet data written here with pyarrow, and check what it wrote with pyarrow: the
reference is always computed independently of Weir.
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parents[2]
WEIR_BIN = Path(os.environ.get("WEIR_BIN", REPO / "target" / "debug" / "weir"))


class Weir:
    """Runs the weir binary and returns the completed process."""

    def __call__(self, *args, timeout=300, check=None, **kwargs):
        proc = subprocess.run(
            [str(WEIR_BIN), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check is not None:
            assert proc.returncode == check, (
                f"weir {' '.join(map(str, args))} exited {proc.returncode}, expected {check}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc


@pytest.fixture(scope="session")
def weir():
    assert WEIR_BIN.exists(), f"build weir first: {WEIR_BIN} is missing"
    return Weir()


def write_job(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def write_dataset(table: pa.Table, directory: Path, pieces=(0.3, 0.25, 0.45), row_group=50) -> Path:
    """Splits `table` into several files with several row groups, plus an empty file."""
    directory.mkdir(parents=True)
    bounds = np.cumsum([0] + [int(p * table.num_rows) for p in pieces[:-1]] + [table.num_rows])
    bounds[-1] = table.num_rows
    for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        pq.write_table(table.slice(lo, hi - lo), directory / f"part-{index}.parquet", row_group_size=row_group)
    pq.write_table(table.slice(0, 0), directory / "part-9-empty.parquet")
    return directory


def read_output(prefix: Path) -> pa.Table:
    """Reads a Weir output with pyarrow, only through the files its manifest lists."""
    manifest = json.loads((prefix / "_weir" / "manifest.json").read_text())
    tables = [pq.read_table(prefix / f["path"]) for f in manifest["files"]]
    return pa.concat_tables(tables) if tables else None


def data_files(prefix: Path):
    return sorted(p for p in prefix.rglob("*") if p.is_file() and not any(part.startswith(("_", ".")) for part in p.relative_to(prefix).parts))


def make_events(rng: np.random.Generator, start: int, rows: int) -> pa.Table:
    """A table like raw event data: ids, ints, floats and strings, with nulls."""
    ids = np.arange(start, start + rows, dtype=np.int64)
    age = rng.integers(-5, 90, rows).astype(np.int32)
    income = rng.normal(50_000, 20_000, rows)
    country = rng.choice(np.array(["DE", "FR", "US", "JP", "BR"]), rows)
    score = np.char.mod("%.3f", rng.normal(0, 1, rows)).astype(object)
    bad = rng.random(rows) < 0.05
    score[bad] = "n/a"
    mask = lambda p: rng.random(rows) < p  # noqa: E731
    return pa.table(
        {
            "id": pa.array(ids),
            "age": pa.array(age, mask=mask(0.1)),
            "income": pa.array(income, mask=mask(0.2)),
            "country": pa.array(country, mask=mask(0.1)),
            "score": pa.array(score, type=pa.string(), mask=mask(0.05)),
            "email": pa.array([f"user{i}@example.com" for i in ids], mask=mask(0.3)),
        }
    )


@pytest.fixture
def events_dir(tmp_path: Path) -> Path:
    """Three files with several row groups each, an empty file, and a hidden file."""
    rng = np.random.default_rng(20261125)
    src = tmp_path / "events"
    src.mkdir()
    start = 0
    for index, (rows, group) in enumerate([(5_000, 1_000), (3_333, 700), (12_000, 5_000)]):
        pq.write_table(make_events(rng, start, rows), src / f"part-{index}.parquet", row_group_size=group)
        start += rows
    empty = make_events(rng, 0, 0)
    pq.write_table(empty, src / "part-3-empty.parquet")
    (src / "_SUCCESS").write_text("")
    return src


def read_inputs(src: Path) -> pa.Table:
    """Reads a dataset's data files with pyarrow (null-typed columns promoted)."""
    return pa.concat_tables((pq.read_table(f) for f in data_files(src)), promote_options="default")


@pytest.fixture(scope="module")
def garage(tmp_path_factory):
    """A Garage server on 127.0.0.1 for the tests of one module (see garage.py)."""
    from garage import Garage

    server = Garage(tmp_path_factory.mktemp("garage")).start()
    yield server
    server.stop()
