"""The source cache and the per-stage metrics.

A job with a dedupe and three fitted steps reads its source three times (the dedupe's pass,
one pass that fits impute → standardize → pca together, the final pass); with the cache on
(the default), partly on (a budget smaller than the data) or off (`cache_mb = 0`) it must
write exactly the same rows and values, which pandas and scikit-learn check for the cleaned
features. The `--json` summary and the manifest report where the time went: the stages
the job has, and as many passes as it made.
"""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.preprocessing import StandardScaler

from conftest import read_output, write_job
from helpers import SHAPES_1_AND_2X2, shape_id

FEATURES = [f"x{j}" for j in range(12)]
OVERLAPPED = "read ahead (fetch + decode on I/O threads, overlapped)"
# Rows × (12 float64 features + 2 int64 columns + validity) ≈ 7 MiB decoded: a 2 MiB cache
# (1 MiB per worker with 2 workers a process) holds only some of the shards.
ROWS = 60_000


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    rng = np.random.default_rng(5)
    directory = tmp_path_factory.mktemp("cache") / "src"
    directory.mkdir()
    columns = {
        "id": pa.array(np.arange(ROWS, dtype=np.int64)),
        "key": pa.array(rng.integers(0, ROWS // 2, ROWS)),
    }
    latent = rng.normal(size=(ROWS, 3))
    values = latent @ rng.normal(size=(3, len(FEATURES))) + rng.normal(scale=0.3, size=(ROWS, len(FEATURES)))
    for j, name in enumerate(FEATURES):
        columns[name] = pa.array(values[:, j] * (j + 1) + j, mask=rng.random(ROWS) < 0.05)
    table = pa.table(columns)
    for index, (lo, hi) in enumerate([(0, 25_000), (25_000, 40_000), (40_000, ROWS)]):
        pq.write_table(table.slice(lo, hi - lo), directory / f"part-{index}.parquet", row_group_size=4_000)
    return directory, table


def run(weir, tmp_path, src, shape, cache_mb, *flags):
    out = tmp_path / f"out-{cache_mb}"
    cache = "" if cache_mb is None else f"cache_mb = {cache_mb}\n"
    job = write_job(
        tmp_path / f"job-{cache_mb}.toml",
        f"""
name = "cached"
[source]
uri = "{src}"
{cache}
[[step]]
op = "dedupe"
columns = ["key"]
[[step]]
op = "impute"
columns = {json.dumps(FEATURES)}
[[step]]
op = "standardize"
columns = {json.dumps(FEATURES)}
[[step]]
op = "pca"
columns = {json.dumps(FEATURES)}
components = 3
keep_inputs = true
[sink]
uri = "{out}"
""",
    )
    proc = weir("run", job, *shape, *flags, check=0)
    return out, proc


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_cache_on_partly_and_off_write_the_same_output(weir, tmp_path, source, shape):
    src, table = source
    outputs = {}
    for cache_mb in (0, 2, None):
        out, proc = run(weir, tmp_path, src, shape, cache_mb, "--json")
        summary = json.loads(proc.stdout)
        manifest = json.loads((out / "_weir" / "manifest.json").read_text())
        # dedupe; impute, standardize and pca fitted in one pass; then the final pass.
        assert summary["passes"] == manifest["passes"] == 3
        labels = [s["stage"] for s in manifest["stages"]]
        assert labels == [s["stage"] for s in summary["stages"]]
        assert ("read (from the cache)" in labels) == (cache_mb != 0), labels
        outputs[cache_mb] = read_output(out).sort_by("id")

    for cache_mb in (2, None):
        assert outputs[cache_mb].equals(outputs[0]), f"cache_mb = {cache_mb} changed the output"

    # The reference: pandas keeps each key's first row; scikit-learn standardizes the
    # mean-imputed features of the rows kept.
    frame = table.to_pandas()
    kept = frame.drop_duplicates(subset=["key"], keep="first").sort_values("id")
    got = outputs[0]
    assert got.column("id").to_pylist() == kept["id"].tolist()
    raw = kept[FEATURES].to_numpy(dtype=float)
    imputed = np.where(np.isnan(raw), np.nanmean(raw, axis=0), raw)
    expected = StandardScaler().fit_transform(imputed)
    actual = np.column_stack([got.column(n).to_numpy() for n in FEATURES])
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-12)


def test_metrics_report_every_stage_within_the_run_time(weir, tmp_path, source):
    src, _ = source
    _, proc = run(weir, tmp_path, src, ["-w", "2"], None, "--json")
    summary = json.loads(proc.stdout)
    labels = [s["stage"] for s in summary["stages"]]
    for expected in [
        "read (wait for fetch + decode)",
        "read (from the cache)",
        "step 1 dedupe: dedupe keys",
        "step 1 dedupe: dedupe reduce",
        "steps 2-4 impute to pca: fit in one pass (fold partials)",
        "steps 2-4 impute to pca: fit in one pass (merge + finish, worker 0)",
        # A chain fitted in one pass is applied as one step too (here its members in turn, as
        # pca keeps its inputs; fused into one map where it drops them).
        "steps 2-4 impute to pca: apply",
        "write (encode + upload)",
    ]:
        assert expected in labels, f"{expected!r} missing from {labels}"
    assert labels[-1].startswith("other")
    # Every stage listed before the remainder was timed: its clocks ran on at least one batch
    # (or call), and for some time.
    untimed = [s for s in summary["stages"][:-1] if not (s["batches"] > 0 and s["worker_seconds"] > 0)]
    assert untimed == [], untimed
    # The read-ahead's own time overlaps the workers' clocks and is reported beside them.
    assert OVERLAPPED in labels, labels
    total = sum(s["worker_seconds"] for s in summary["stages"] if s["stage"] != OVERLAPPED)
    # Two workers cannot have been busy for longer than twice the run.
    assert 0 < total <= 2 * summary["seconds"] + 0.05, (total, summary["seconds"])

    _, proc = run(weir, tmp_path, src, ["-w", "2"], 0, "--metrics")
    assert "3 pass(es) over the source" in proc.stderr
    assert "read (wait for fetch + decode)" in proc.stderr and "read (from the cache)" not in proc.stderr
    assert "steps 2-4 impute to pca: apply" in proc.stderr
