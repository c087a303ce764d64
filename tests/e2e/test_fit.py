"""`weir fit` and models pinned to their fitted parameters (`score`'s `fitted_sha256`).

- `weir fit JOB -o FILE` runs only the fitting passes: FILE holds the parameters (equal to
  scikit-learn's SimpleImputer and StandardScaler on the training data), nothing else is
  written, and it prints the parameters' SHA-256. A night-2 run with `fitted = "FILE"`
  transforms new data with the training parameters (checked with NumPy) and scores it as
  onnxruntime does on those features.
- A score step pinned to that SHA-256 runs when the parameters are reused, and fails with
  exit 2, naming the step and both hashes, with nothing committed, when they are refitted
  on other data; `weir validate` already refuses a pin that reused parameters contradict.
- `weir fit` refuses a job without fitted steps, and an existing FILE without `--overwrite`.
"""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler

from conftest import write_job
from helpers import SCORE_FEATURES, helper_mlp, onnx_reference


def night(folder, seed, shift):
    """A night's data: the MLP's 6 features with nulls, drifting by `shift`."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = 2_000
    columns = {"id": np.arange(rows, dtype=np.int64)}
    for i, name in enumerate(SCORE_FEATURES):
        values = rng.normal(i + shift, 1 + i / 3, rows)
        columns[name] = pa.array(values, mask=rng.random(rows) < 0.05)
    table = pa.table(columns)
    pq.write_table(table, folder / "part.parquet", row_group_size=500)
    return table


def job_text(src, out, model, fitted="", pin=""):
    return f"""name = "pinned"
{fitted}
[source]
uri = "{src}"
[[step]]
op = "impute"
columns = {json.dumps(SCORE_FEATURES)}
strategy = "mean"
[[step]]
op = "standardize"
columns = {json.dumps(SCORE_FEATURES)}
[[step]]
op = "score"
model = "{model}"
inputs = {{ x = {json.dumps(SCORE_FEATURES)} }}
outputs = {{ y = "score" }}
{pin}
[sink]
uri = "{out}"
mode = "overwrite"
"""


def matrix(table):
    return np.column_stack([table[n].to_numpy(zero_copy_only=False).astype(float) for n in SCORE_FEATURES])


def test_fit_then_reuse_and_pin(weir, tmp_path):
    model = helper_mlp(tmp_path / "mlp.onnx")
    train = night(tmp_path / "night1", 1, 0.0)
    new = night(tmp_path / "night2", 2, 0.7)

    # Fit on night 1 only: fitted.json and nothing else.
    fit_job = write_job(tmp_path / "fit.toml", job_text(tmp_path / "night1", tmp_path / "never", model))
    proc = weir("fit", fit_job, "-o", tmp_path / "fitted.json", "-w", "2", cwd=tmp_path, check=0)
    sha = re.search(r"fitted parameters SHA-256: ([0-9a-f]{64})", proc.stdout).group(1)
    assert not (tmp_path / "never").exists(), "weir fit writes no output"
    fitted = json.loads((tmp_path / "fitted.json").read_text())
    assert [s["op"] for s in fitted["steps"]] == ["impute", "standardize"]
    imputer = SimpleImputer(strategy="mean").fit(matrix(train))
    imputed = imputer.transform(matrix(train))
    scaler = StandardScaler().fit(imputed)
    means = [fitted["steps"][0]["params"]["columns"][n]["value"] for n in SCORE_FEATURES]
    np.testing.assert_allclose(means, imputer.statistics_, rtol=1e-12)
    np.testing.assert_allclose([fitted["steps"][1]["params"]["columns"][n]["mean"] for n in SCORE_FEATURES], scaler.mean_, rtol=1e-12)
    proc = weir("fit", fit_job, "-o", tmp_path / "fitted.json", cwd=tmp_path, check=2)
    assert "--overwrite" in proc.stderr
    assert sha in weir("fit", fit_job, "-o", tmp_path / "fitted.json", "--overwrite", cwd=tmp_path, check=0).stdout, "a fit is reproducible"

    # Night 2 reuses them, pinned: transformed with night 1's parameters, scored as onnxruntime does.
    pin = f'fitted_sha256 = "{sha}"'
    out = tmp_path / "out2"
    reuse = write_job(tmp_path / "night2.toml", job_text(tmp_path / "night2", out, model, 'fitted = "fitted.json"', pin))
    assert weir("validate", reuse, cwd=tmp_path, check=0).returncode == 0
    weir("run", reuse, "-w", "2", cwd=tmp_path, check=0)
    got = pq.read_table(out).sort_by("id")
    features = scaler.transform(imputer.transform(matrix(new)))
    np.testing.assert_allclose(matrix(got), features, rtol=1e-9, atol=1e-12)
    want = onnx_reference(model, features)["y"]
    np.testing.assert_allclose(np.column_stack([got[f"score_{j}"].to_numpy() for j in range(3)]), want, rtol=1e-4, atol=1e-4)

    # Refitted on night 2 with the pin: exit 2, nothing committed.
    refit_out = tmp_path / "refit"
    refit = write_job(tmp_path / "refit.toml", job_text(tmp_path / "night2", refit_out, model, "", pin))
    proc = weir("run", refit, "-w", "2", cwd=tmp_path, check=2)
    assert "step 3 (score)" in proc.stderr and sha in proc.stderr and "refitted" in proc.stderr, proc.stderr
    assert not (refit_out / "_SUCCESS").exists()

    # A pin that the reused parameters contradict: validate says so at once.
    wrong = write_job(tmp_path / "wrong.toml", job_text(tmp_path / "night2", out, model, 'fitted = "fitted.json"', f'fitted_sha256 = "{"0" * 64}"'))
    proc = weir("validate", wrong, cwd=tmp_path, check=2)
    assert "step 3 (score)" in proc.stderr and sha in proc.stderr, proc.stderr


def test_fit_needs_fitted_steps(weir, tmp_path):
    src = tmp_path / "src"
    night(src, 3, 0.0)
    text = f'name = "plain"\n[source]\nuri = "{src}"\n[[step]]\nop = "filter"\nexpr = "f0 > 0"\n[sink]\nuri = "{tmp_path / "out"}"\n'
    proc = weir("fit", write_job(tmp_path / "job.toml", text), "-o", tmp_path / "f.json", cwd=tmp_path, check=2)
    assert "no fitted step" in proc.stderr, proc.stderr
    assert not (tmp_path / "f.json").exists()
