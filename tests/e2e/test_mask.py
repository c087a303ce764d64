"""End-to-end tests of the `mask` step, checked against Python's own hmac module.

The key reaches Weir only through the environment variable the job names in `key_env`;
every masked value is recomputed here with `hmac.new(key, value.encode(), sha256)`.
"""

import hashlib
import hmac
import os

import pyarrow as pa
import pytest

from conftest import data_files, read_inputs, read_output, write_job

KEY = "correct horse battery staple \u00e9"

MASK_JOB = """
name = "mask-events"

[source]
uri = "{src}"
batch_size = 900

[[step]]
op = "select"
columns = ["id", "age", "country", "email"]

[[step]]
op = "mask"
columns = ["email", "ag?"]
key_env = "WEIR_MASK_KEY"

[[step]]
op = "mask"
columns = ["country"]
method = "redact"
replacement = "<gone>"

[sink]
uri = "{out}"
"""


def env_with_key(key):
    env = {name: value for name, value in os.environ.items() if name != "WEIR_MASK_KEY"}
    if key is not None:
        env["WEIR_MASK_KEY"] = key
    return env


def token(value):
    if value is None:
        return None
    return hmac.new(KEY.encode(), str(value).encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("shape", [["-w", "1"], ["-p", "2", "-w", "2"]], ids=["1worker", "2procs-x-2workers"])
def test_mask_matches_python_hmac(weir, tmp_path, events_dir, shape):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", MASK_JOB.format(src=events_dir, out=out))
    result = weir("run", job, *shape, check=0, env=env_with_key(KEY))
    assert KEY not in result.stdout and KEY not in result.stderr

    source = read_inputs(events_dir).sort_by("id")
    got = read_output(out).sort_by("id")
    assert got.column_names == ["id", "age", "country", "email"]
    assert got.schema.field("email").type == pa.string()
    assert got.schema.field("age").type == pa.string()
    assert got.schema.field("country").type == pa.string()
    assert got["id"].to_pylist() == source["id"].to_pylist()

    emails = source["email"].to_pylist()
    assert got["email"].to_pylist() == [token(v) for v in emails]
    ages = source["age"].to_pylist()
    assert got["age"].to_pylist() == [token(v) for v in ages], "integers are hashed as their decimal text"
    countries = source["country"].to_pylist()
    assert got["country"].to_pylist() == [None if v is None else "<gone>" for v in countries]
    assert got["email"].null_count == source["email"].null_count > 0
    assert got["age"].null_count == source["age"].null_count > 0
    assert (out / "_SUCCESS").exists()


def test_a_missing_key_variable_fails_before_anything_is_written(weir, tmp_path, events_dir):
    out = tmp_path / "out"
    job = write_job(tmp_path / "job.toml", MASK_JOB.format(src=events_dir, out=out))
    for key in (None, ""):
        result = weir("run", job, "-w", "2", check=2, env=env_with_key(key))
        assert result.stderr.startswith("weir: error:"), result.stderr
        assert "panicked" not in result.stderr
        assert "step 2 (mask)" in result.stderr and "WEIR_MASK_KEY" in result.stderr, result.stderr
        assert "must hold the HMAC key" in result.stderr, result.stderr
        assert not (out / "_SUCCESS").exists()
        assert not out.exists() or data_files(out) == [], "no part file is left behind"


def test_the_key_cannot_be_written_in_the_job(weir, tmp_path, events_dir):
    out = tmp_path / "out"
    text = MASK_JOB.format(src=events_dir, out=out).replace('key_env = "WEIR_MASK_KEY"', f'key = "{KEY}"')
    result = weir("run", write_job(tmp_path / "job.toml", text), check=2, env=env_with_key(KEY))
    assert "key" in result.stderr
    assert not (out / "_SUCCESS").exists()
