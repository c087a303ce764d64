"""Spilling decoded batches to local disk between passes (`source.spill_mb`, `spill_dir`).

A job with a fit stage reads its source twice. Past the in-memory cache (`cache_mb`), the
first pass writes what it decoded to local Arrow IPC files and the final pass reads them
back instead of decoding the Parquet again. Whatever the budgets (all in memory, all
spilled, partly each, spilling off), the output must be the same rows and values, equal to
scikit-learn's on the mean-imputed features; the spill directory must be empty after a
run that succeeded, failed in its final pass, or was stopped by SIGTERM.
"""

import json
import signal
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from conftest import read_output, write_job
from helpers import SHAPES_1_AND_2X2, Run, live_glob, shape_id

FEATURES = [f"x{j}" for j in range(8)]
ROWS = 40_000
SPILLED = "read (from local spill files)"
CACHED = "read (from the cache)"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    rng = np.random.default_rng(11)
    directory = tmp_path_factory.mktemp("spill") / "src"
    directory.mkdir()
    latent = rng.normal(size=(ROWS, 3))
    values = latent @ rng.normal(size=(3, len(FEATURES))) + rng.normal(scale=0.2, size=(ROWS, len(FEATURES)))
    columns = {"id": pa.array(np.arange(ROWS, dtype=np.int64))}
    for j, name in enumerate(FEATURES):
        columns[name] = pa.array(values[:, j] * (j + 1) + 10 * j, mask=rng.random(ROWS) < 0.05)
    columns["tag"] = pa.array(np.where(np.arange(ROWS) < ROWS - 5, "7", "seven"))
    table = pa.table(columns)
    for index, (lo, hi) in enumerate([(0, 15_000), (15_000, ROWS)]):
        pq.write_table(table.slice(lo, hi - lo), directory / f"part-{index}.parquet", row_group_size=2_500)
    return directory, table


def job(tmp_path, src, name, source_options, extra_steps=""):
    out = tmp_path / f"out-{name}"
    return out, write_job(
        tmp_path / f"job-{name}.toml",
        f"""
name = "spill"
[source]
uri = "{src}"
{source_options}
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
{extra_steps}
[sink]
uri = "{out}"
""",
    )


def leftovers(spill_dir):
    return [str(p.relative_to(spill_dir)) for p in live_glob(spill_dir, "**/*")]


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_every_budget_writes_the_same_output_and_cleans_up(weir, tmp_path, source, shape):
    src, table = source
    spill_dir = tmp_path / "spill"
    budgets = {
        "memory": "",
        "all-spilled": f'cache_mb = 0\nspill_dir = "{spill_dir}"\nspill_keep_free_mb = 0',
        "some-spilled": f'cache_mb = 2\nspill_dir = "{spill_dir}"\nspill_keep_free_mb = 0',
        "re-decoded": "cache_mb = 0\nspill_mb = 0",
    }
    outputs = {}
    for name, options in budgets.items():
        out, job_path = job(tmp_path, src, name, options)
        proc = weir("run", job_path, *shape, "--json", check=0)
        labels = {s["stage"]: s for s in json.loads(proc.stdout)["stages"]}
        assert (SPILLED in labels) == name.endswith("spilled"), (name, list(labels))
        assert (CACHED in labels) == (name in ("memory", "some-spilled")), (name, list(labels))
        if name == "all-spilled":
            # Decoded once: the final pass read every batch back from the spill files.
            assert labels[SPILLED]["batches"] == labels["read (wait for fetch + decode)"]["batches"], labels
        assert leftovers(spill_dir) == [], f"{name}: spill files left behind"
        outputs[name] = read_output(out).sort_by("id")
    for name, output in outputs.items():
        assert output.equals(outputs["re-decoded"]), f"{name} changed the output"

    raw = table.select(FEATURES).to_pandas().to_numpy(dtype=float)
    imputed = np.where(np.isnan(raw), np.nanmean(raw, axis=0), raw)
    scaled = StandardScaler().fit_transform(imputed)
    got = outputs["memory"]
    np.testing.assert_allclose(
        np.column_stack([got.column(n).to_numpy() for n in FEATURES]), scaled, rtol=1e-9, atol=1e-12
    )
    reference = PCA(n_components=3, svd_solver="full").fit(scaled)
    components = np.column_stack([got.column(f"pc_{k}").to_numpy() for k in range(3)])
    expected = reference.transform(scaled)
    # Component signs: Weir makes each component's largest loading positive.
    signs = np.sign(reference.components_[np.arange(3), np.abs(reference.components_).argmax(axis=1)])
    np.testing.assert_allclose(components, expected * signs, rtol=1e-7, atol=1e-9)


def test_a_run_failing_in_its_final_pass_removes_its_spill_files(weir, tmp_path, source):
    src, _ = source
    spill_dir = tmp_path / "spill"
    cast = '[[step]]\nop = "cast"\ncolumns = { tag = "int64" }\n'
    out, job_path = job(tmp_path, src, "fails", f'cache_mb = 0\nspill_dir = "{spill_dir}"\nspill_keep_free_mb = 0', cast)
    proc = weir("run", job_path, "-w", "2")
    assert proc.returncode == 2, proc.stderr
    assert "'seven'" in proc.stderr and "tag" in proc.stderr, proc.stderr
    assert leftovers(spill_dir) == []
    assert not out.exists() or not any(p.suffix == ".parquet" for p in out.rglob("*"))


def test_sigterm_after_spilling_removes_the_spill_files(weir, tmp_path, source):
    src, _ = source
    spill_dir = tmp_path / "spill"
    # Slow the final pass with a small batch size so the signal lands while it reads back.
    options = f'cache_mb = 0\nbatch_size = 64\nspill_dir = "{spill_dir}"\nspill_keep_free_mb = 0'
    _, job_path = job(tmp_path, src, "term", options)
    run = Run(job_path, "-w", "2")
    try:
        seen = []
        deadline = time.time() + 60
        while run.proc.poll() is None and time.time() < deadline:
            seen = [p for p in leftovers(spill_dir) if p.endswith(".arrows")]
            if len(seen) >= 2:
                run.proc.send_signal(signal.SIGTERM)
                break
            time.sleep(0.005)
        rc = run.wait(timeout=120)
    finally:
        run.kill()
    assert seen, f"no spill file was seen: {run.describe()}"
    assert rc in (0, 143), run.describe()
    assert leftovers(spill_dir) == [], f"exit {rc}: spill files left behind"


def test_two_runs_at_once_share_a_spill_dir_without_touching_each_other(weir, tmp_path, source):
    """Two runs spilling into the same `spill_dir` at the same time (each worker makes its
    own `weir-spill-*` directory there): both commit the same output as a run without any
    cache, and neither leaves or deletes anything of the other's."""
    src, _ = source
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()
    bystander = spill_dir / "not-weirs.txt"
    bystander.write_text("someone else's file")
    runs = []
    for name in ("first", "second"):
        out, job_path = job(tmp_path, src, name, f'cache_mb = 0\nbatch_size = 512\nspill_dir = "{spill_dir}"\nspill_keep_free_mb = 0')
        runs.append((out, Run(job_path, "-w", "2")))
    try:
        codes = [run.wait(timeout=180) for _, run in runs]
    finally:
        for _, run in runs:
            run.kill()
    assert codes == [0, 0], [run.describe() for _, run in runs]
    # The same shape without any cache: the same batches folded in the same order.
    reference_out, reference_job = job(tmp_path, src, "reference", "cache_mb = 0\nspill_mb = 0\nbatch_size = 512")
    weir("run", reference_job, "-w", "2", check=0)
    expected = read_output(reference_out).sort_by("id")
    for out, _ in runs:
        assert read_output(out).sort_by("id").equals(expected)
    assert leftovers(spill_dir) == ["not-weirs.txt"] and bystander.read_text() == "someone else's file"
