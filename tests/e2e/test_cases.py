"""The golden cases of tests/cases/: each folder's job run at every shape, its output
checked by the folder's own reference (see tests/cases/README.md). A new case is a new
folder; nothing here changes."""

import importlib.util
import shutil
from pathlib import Path

import pytest

import json

import pyarrow.parquet as pq

from conftest import REPO, data_files
from helpers import SHAPES_1_AND_2X2, shape_id

CASES = sorted(p for p in (REPO / "tests" / "cases").iterdir() if (p / "job.toml").exists())


def load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"case_{path.parent.name.replace('-', '_')}_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_case(weir, tmp_path, case, shape):
    shutil.copy(case / "job.toml", tmp_path / "job.toml")
    load(case / "make_data.py", "make_data").make(tmp_path)
    weir("run", tmp_path / "job.toml", *shape, cwd=tmp_path, check=0)
    out = tmp_path / "out"
    assert (out / "_SUCCESS").exists()
    manifest = json.loads((out / "_weir" / "manifest.json").read_text())
    assert sorted(f["path"] for f in manifest["files"]) == sorted(str(p.relative_to(out)) for p in data_files(out))
    assert manifest["rows"] == sum(pq.ParquetFile(out / f["path"]).metadata.num_rows for f in manifest["files"])
    load(case / "reference.py", "reference").check(tmp_path / "out", tmp_path / "data")
