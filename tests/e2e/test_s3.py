"""Jobs against a real S3-compatible server (Garage, started by these tests on 127.0.0.1).

Outputs are read back with boto3 + pyarrow (through the manifest) and with Polars'
own S3 reader, and compared with the same job run on local files.
"""

import io
import json
import os
import subprocess
import time

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import WEIR_BIN, read_output, write_job
from garage import KEY_ID, REGION, SECRET, Garage
from helpers import SCORE_FEATURES, Service, expect, expect_error, free_port, helper_mlp, onnx_reference, submit, wait_run





def read_s3_output(server: Garage, bucket_name: str, prefix: str) -> pa.Table:
    """Reads a Weir output with boto3 + pyarrow, only through the files its manifest lists."""
    client = server.client()
    manifest = json.loads(client.get_object(Bucket=bucket_name, Key=f"{prefix}/_weir/manifest.json")["Body"].read())
    tables = []
    for entry in manifest["files"]:
        body = client.get_object(Bucket=bucket_name, Key=f"{prefix}/{entry['path']}")["Body"].read()
        tables.append(pq.read_table(io.BytesIO(body)))
    return pa.concat_tables(tables)


JOB = """
name = "s3-clean"
[source]
uri = "{source}"
[[step]]
op = "cast"
columns = {{ score = "float64" }}
on_error = "null"
[[step]]
op = "filter"
expr = "age >= 0"
[[step]]
op = "impute"
columns = ["income", "score"]
strategy = "median"
{fitted}
[[step]]
op = "standardize"
columns = ["income", "score"]
{fitted}
[[step]]
op = "mask"
columns = ["email"]
method = "redact"
[sink]
uri = "{sink}"
mode = "overwrite"
"""


def test_bucket_to_bucket_equals_the_local_run(weir, tmp_path, events_dir, garage):
    src, dst = garage.new_bucket("src"), garage.new_bucket("dst")
    garage.upload_dir(events_dir, src, "events")
    env = garage.env()

    local_job = write_job(tmp_path / "local.toml", JOB.format(source=events_dir, sink=tmp_path / "local", fitted=""))
    weir("run", local_job, "-p", "2", "-w", "2", check=0)
    s3_job = write_job(tmp_path / "s3.toml", JOB.format(source=f"s3://{src}/events/", sink=f"s3://{dst}/clean/", fitted=""))
    proc = weir("run", s3_job, "-p", "2", "-w", "2", env=env, check=0)
    assert SECRET not in proc.stdout + proc.stderr

    expected = read_output(tmp_path / "local").sort_by("id")
    got = read_s3_output(garage, dst, "clean").sort_by("id")
    assert got.equals(expected)
    keys = garage.keys(dst, "clean/")
    assert "clean/_SUCCESS" in keys and "clean/_weir/fitted.json" in keys
    manifest = garage.client().get_object(Bucket=dst, Key="clean/_weir/manifest.json")["Body"].read().decode()
    assert SECRET not in manifest

    # Polars reads the same rows through its own S3 client.
    parts = [f"s3://{dst}/{k}" for k in keys if k.endswith(".parquet")]
    frame = pl.concat([pl.read_parquet(p, storage_options=garage.storage_options()) for p in parts]).sort("id")
    assert frame.to_arrow().select(expected.column_names).cast(expected.schema).equals(expected)

    # Fitted parameters loaded from the bucket reproduce the same output without refitting.
    fitted = f"s3://{dst}/clean/_weir/fitted.json"
    reuse_job = write_job(
        tmp_path / "reuse.toml",
        JOB.format(source=f"s3://{src}/events/", sink=f"s3://{dst}/reused/", fitted=f"fitted = {json.dumps(fitted)}"),
    )
    weir("run", reuse_job, "-w", "2", env=env, check=0)
    assert read_s3_output(garage, dst, "reused").sort_by("id").equals(expected)


def test_ls_head_and_schema_read_s3(weir, tmp_path, events_dir, garage):
    src, dst = garage.new_bucket("src"), garage.new_bucket("dst")
    garage.upload_dir(events_dir, src, "events")
    job = write_job(tmp_path / "job.toml", JOB.format(source=f"s3://{src}/events/", sink=f"s3://{dst}/out/", fitted=""))
    env = garage.env()
    weir("run", job, "-w", "2", env=env, check=0)
    listing = weir("ls", f"s3://{dst}/out/", env=env, check=0).stdout
    assert "_SUCCESS" in listing and "committed" in listing
    head = weir("head", f"s3://{dst}/out", "-n", "3", env=env, check=0).stdout
    assert "income" in head
    schema = weir("schema", f"s3://{src}/events/", env=env, check=0).stdout
    assert "income: Float64" in schema


def test_wrong_credentials_and_missing_buckets_are_bad_input(weir, tmp_path, events_dir, garage):
    src, dst = garage.new_bucket("src"), garage.new_bucket("dst")
    garage.upload_dir(events_dir, src, "events")
    job = write_job(tmp_path / "job.toml", JOB.format(source=f"s3://{src}/events/", sink=f"s3://{dst}/out/", fitted=""))
    wrong = "f" * 64
    proc = weir("run", job, env=garage.env(AWS_SECRET_ACCESS_KEY=wrong), check=2)
    assert f"s3://{src}" in proc.stderr and "403" in proc.stderr, proc.stderr
    assert wrong not in proc.stderr and SECRET not in proc.stderr

    missing = write_job(tmp_path / "missing.toml", JOB.format(source="s3://no-such-bucket/x/", sink=f"s3://{dst}/out/", fitted=""))
    proc = weir("run", missing, env=garage.env(), check=2)
    assert "s3://no-such-bucket" in proc.stderr, proc.stderr
    missing_sink = write_job(tmp_path / "missing-sink.toml", JOB.format(source=f"s3://{src}/events/", sink="s3://no-such-out/o/", fitted=""))
    proc = weir("run", missing_sink, env=garage.env(), check=2)
    assert "s3://no-such-out" in proc.stderr, proc.stderr
    assert garage.keys(dst) == []


def test_a_server_killed_mid_run_fails_cleanly_and_the_rerun_commits(weir, tmp_path):
    server = Garage(tmp_path / "garage").start()
    try:
        src, dst = server.new_bucket("src"), server.new_bucket("dst")
        rng = np.random.default_rng(8)
        local = tmp_path / "data"
        local.mkdir()
        rows = 0
        for index in range(4):
            n = 400_000
            table = pa.table({"id": np.arange(rows, rows + n), **{f"f{j}": rng.normal(size=n) for j in range(6)}})
            pq.write_table(table, local / f"part-{index}.parquet", row_group_size=100_000)
            rows += n
        server.upload_dir(local, src, "big")
        job = write_job(
            tmp_path / "job.toml",
            f'name = "killed"\n[source]\nuri = "s3://{src}/big/"\n[[step]]\nop = "clip"\ncolumns = ["f*"]\nlower = -1.0\n'
            f'[sink]\nuri = "s3://{dst}/out/"\nmode = "overwrite"\nrow_group_rows = 20000\nlease_ttl_s = 2\n'
            "[storage]\nmax_retries = 2\nretry_timeout_s = 3\n",
        )
        run = subprocess.Popen([str(WEIR_BIN), "run", str(job), "-w", "2"], env=server.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Kill the server once the run is uploading part files (multipart uploads begun).
        client, deadline = server.client(), time.time() + 120
        while run.poll() is None and not client.list_multipart_uploads(Bucket=dst).get("Uploads"):
            assert time.time() < deadline, "the run never started uploading"
            time.sleep(0.05)
        assert run.poll() is None, "the run ended before the server could be killed"
        server.stop()
        out, err = run.communicate(timeout=120)
        assert run.returncode == 1, (run.returncode, out, err)
        assert f"s3://{dst}/out" in err, err

        server.start()
        keys = server.keys(dst, "out/")
        assert "out/_SUCCESS" not in keys
        assert not [k for k in keys if not k.startswith("out/_weir/runs/")], "nothing of the failed run is visible"
        # The failed run could not release its lease (lease_ttl_s = 2) while the server was down.
        time.sleep(3)
        weir_proc = subprocess.run([str(WEIR_BIN), "run", str(job), "-w", "2"], env=server.env(), capture_output=True, text=True, timeout=300)
        assert weir_proc.returncode == 0, weir_proc.stderr
        manifest = json.loads(server.client().get_object(Bucket=dst, Key="out/_weir/manifest.json")["Body"].read())
        expected_keys = sorted(["out/_SUCCESS", "out/_weir/manifest.json"] + [f"out/{f['path']}" for f in manifest["files"]])
        assert server.keys(dst, "out/") == expected_keys  # nothing of the failed attempt is left
        assert manifest["rows"] == rows
    finally:
        server.stop()



def test_a_model_from_a_bucket_scores_like_the_local_file(weir, tmp_path, garage):
    src, models, dst = garage.new_bucket("src"), garage.new_bucket("models"), garage.new_bucket("dst")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, len(SCORE_FEATURES)))
    local = tmp_path / "data"
    local.mkdir()
    pq.write_table(pa.table({"id": np.arange(500), **{n: x[:, j] for j, n in enumerate(SCORE_FEATURES)}}), local / "x.parquet", row_group_size=128, compression="zstd")
    garage.upload_dir(local, src, "x")
    model = helper_mlp(tmp_path / "mlp.onnx")
    garage.client().put_object(Bucket=models, Key="mlp/v1.onnx", Body=model.read_bytes())
    job = write_job(
        tmp_path / "job.toml",
        f'name = "s3-score"\n[source]\nuri = "s3://{src}/x/"\n[[step]]\nop = "score"\nmodel = "s3://{models}/mlp/v1.onnx"\n'
        f'inputs = {{ x = {json.dumps(SCORE_FEATURES)} }}\n[sink]\nuri = "s3://{dst}/scored/"\nrow_group_rows = 128\n',
    )
    weir("run", job, "-w", "2", env=garage.env(), check=0)
    got = read_s3_output(garage, dst, "scored").sort_by("id")
    y = np.column_stack([got.column(f"y_{j}").to_numpy() for j in range(3)])
    np.testing.assert_allclose(y, onnx_reference(model, x)["y"], rtol=1e-5, atol=1e-5)
    source = pq.read_table(local / "x.parquet")
    assert got.select(source.column_names).equals(source)
    # The unchanged columns were copied from the chunks the ranged GETs fetched
    # (tests/e2e/test_chunk_copy.py): each output row group is a source row group.
    def chunks(metadata):
        return {
            (group.column(0).statistics.min, group.num_rows): [
                (group.column(c).total_compressed_size, group.column(c).has_dictionary_page) for c in range(1 + len(SCORE_FEATURES))
            ]
            for group in (metadata.row_group(g) for g in range(metadata.num_row_groups))
        }

    client = garage.client()
    manifest = json.loads(client.get_object(Bucket=dst, Key="scored/_weir/manifest.json")["Body"].read())
    written = {}
    for entry in manifest["files"]:
        body = client.get_object(Bucket=dst, Key=f"scored/{entry['path']}")["Body"].read()
        written.update(chunks(pq.ParquetFile(io.BytesIO(body)).metadata))
    assert written == chunks(pq.ParquetFile(local / "x.parquet").metadata)


@pytest.mark.parametrize("what", ["fitted", "model"])
def test_a_store_that_cannot_be_reached_for_a_steps_file_is_exit_1_not_bad_input(weir, tmp_path, events_dir, what):
    """Connection refused (nothing listens on the port) is the outside world's failure: a
    retry may cure it, so the exit code is 1, not 2."""
    port = free_port()
    if what == "fitted":
        step = '[[step]]\nop = "standardize"\ncolumns = ["income"]\nfitted = "s3://b/run/_weir/fitted.json"\n'
    else:
        step = '[[step]]\nop = "score"\nmodel = "s3://b/m.onnx"\ninputs = { x = ["income"] }\noutputs = { y = "y" }\n'
    job = write_job(tmp_path / "job.toml", f'name = "unreachable"\n[source]\nuri = "{events_dir}"\n{step}[sink]\nuri = "{tmp_path / "out"}"\n[storage]\nmax_retries = 0\nretry_timeout_s = 1\n')
    env = {**__import__("os").environ, "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "x" * 40, "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ALLOW_HTTP": "true"}
    proc = weir("run", job, env=env, check=1)
    expected = "fitted parameters" if what == "fitted" else "model"
    assert f"cannot read the {expected}" in proc.stderr and "step 1" in proc.stderr, proc.stderr


def test_storage_profiles_are_the_only_way_to_a_bucket_for_a_team(weir, tmp_path, events_dir, garage):
    """A service with storage profiles and no AWS credentials of its own: a team's token,
    granted profile `lake`, reads and writes a bucket through it (boto3 sees the output);
    a definition naming no profile, its own endpoint, a profile it is not granted, or a
    bucket outside the profile's prefixes is refused (403 or 422, naming the field) with
    nothing written. `weir run` reads the same profiles file from WEIR_STORAGE_PROFILES."""
    lake, other = garage.new_bucket("lake"), garage.new_bucket("other")
    garage.upload_dir(events_dir, lake, "team-a/events")
    garage.upload_dir(events_dir, other, "events")
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        f"""
[profiles.lake]
endpoint = "{garage.endpoint}"
region = "{REGION}"
access_key_id_env = "LAKE_KEY_ID"
secret_access_key_env = "LAKE_SECRET"
prefixes = ["s3://{lake}/team-a/"]

[profiles.archive]
endpoint = "{garage.endpoint}"
region = "{REGION}"
access_key_id_env = "LAKE_KEY_ID"
secret_access_key_env = "LAKE_SECRET"
prefixes = ["s3://{other}/"]
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(LAKE_KEY_ID=KEY_ID, LAKE_SECRET=SECRET)
    root = tmp_path / "svc"
    root.mkdir()
    service = Service(root, ["--storage-profiles", profiles], env=env).start()
    try:
        api = service.admin
        token = expect(api.post("/v1/tokens", json={"name": "team-a", "role": "submit", "inline": True, "profiles": ["lake"]}), 201)
        team = service.api(token["token"])

        def job(source, sink, storage='[storage]\nprofile = "lake"\n'):
            return f'name = "team-a"\n{storage}[source]\nuri = "{source}"\n[sink]\nuri = "{sink}"\nmode = "overwrite"\n'

        good = job(f"s3://{lake}/team-a/events/", f"s3://{lake}/team-a/out/")
        run = submit(team, {"definition": good})
        assert wait_run(api, run["id"])["state"] == "succeeded"
        assert read_s3_output(garage, lake, "team-a/out").num_rows == pq.read_table(events_dir).num_rows

        cases = [
            (job(f"s3://{lake}/team-a/events/", f"s3://{lake}/team-a/x/", storage=""), 403, "through storage profiles only"),
            (job(f"s3://{lake}/team-a/events/", f"s3://{lake}/team-a/x/", storage=f'[storage]\nendpoint = "{garage.endpoint}"\n'), 403, "storage profiles only"),
            (job(f"s3://{other}/events/", f"s3://{other}/x/", storage='[storage]\nprofile = "archive"\n'), 403, "storage.profile 'archive' is not a profile this token may use"),
            (job(f"s3://{other}/events/", f"s3://{lake}/team-a/x/"), 422, f"source.uri 's3://{other}/events/' is outside the prefixes of storage profile 'lake'"),
            (job(f"s3://{lake}/team-a/events/", f"s3://{lake}/x/", storage='[storage]\nprofile = "lake"\nendpoint = "http://127.0.0.1:9"\n'), 422, "may not give its own"),
        ]
        for definition, status, message in cases:
            got = expect_error(team.post("/v1/runs", json={"definition": definition}), status)
            assert message in got, (message, got)
            assert KEY_ID not in got and SECRET not in got
        assert garage.keys(lake, "team-a/x/") == [] and garage.keys(other, "x/") == [] and garage.keys(lake, "x/") == []
        assert SECRET not in service.output
    finally:
        service.stop()

    # The same file and credentials, outside the service.
    local = write_job(tmp_path / "local.toml", f'name = "local"\n[storage]\nprofile = "archive"\n[source]\nuri = "s3://{other}/events/"\n[sink]\nuri = "{tmp_path / "copy"}"\n')
    weir("run", local, "-w", "2", env={**env, "WEIR_STORAGE_PROFILES": str(profiles)}, check=0)
    assert read_output(tmp_path / "copy").num_rows == pq.read_table(events_dir).num_rows
    missing = weir("run", local, env={k: v for k, v in env.items() if k != "LAKE_SECRET"} | {"WEIR_STORAGE_PROFILES": str(profiles)}, check=2)
    assert "set LAKE_SECRET" in missing.stderr, missing.stderr
