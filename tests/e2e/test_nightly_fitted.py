"""A nightly scoring pipeline that stays fitted (the first-day issue: night 2 silently
refitted standardize under a model trained on night 1's parameters, and scores drifted).
A score step after steps fitted on the run's own input is warned about by `validate` and
`run`; one job-level `fitted = "<night 1's output>"` makes night 2 apply night 1's
parameters, and night 2's scores equal onnxruntime's on night 2's data standardized with
night 1's mean and scale (NumPy)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from conftest import read_output, write_job
from helpers import SCORE_FEATURES, fitted_column_params, helper_mlp, onnx_reference

JOB = """name = "nightly-scores"
{fitted}
[source]
uri = "{src}"
[[step]]
op = "standardize"
columns = ["f*"]
[[step]]
op = "score"
model = "{model}"
inputs = {{ x = {features} }}
outputs = {{ y = ["y0", "y1", "y2"] }}
[sink]
uri = "{out}"
"""


def night(directory, seed, shift):
    directory.mkdir()
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=shift, scale=1 + shift, size=(3000, len(SCORE_FEATURES)))
    table = pa.table({"id": np.arange(3000), **{name: x[:, i] for i, name in enumerate(SCORE_FEATURES)}})
    pq.write_table(table, directory / "part-0.parquet")
    return table


def test_one_job_level_fitted_keeps_night_2_on_night_1s_parameters(weir, tmp_path):
    model = helper_mlp(tmp_path / "mlp.onnx")
    night(tmp_path / "night1", 1, 0.0)
    second = night(tmp_path / "night2", 2, 0.7)  # the data drifted
    features = json.dumps(SCORE_FEATURES)

    first_job = write_job(tmp_path / "n1.toml", JOB.format(fitted="", src=tmp_path / "night1", model=model, features=features, out=tmp_path / "out1"))
    checked = weir("validate", first_job, check=0)
    assert "step 2 (score) scores features that step(s) 1 (standardize) fit on this run's own input" in checked.stdout
    ran = weir("run", first_job, check=0)
    assert "warning:" in ran.stderr and "1 (standardize)" in ran.stderr

    fitted = f'fitted = "{tmp_path / "out1"}"'
    second_job = write_job(tmp_path / "n2.toml", JOB.format(fitted=fitted, src=tmp_path / "night2", model=model, features=features, out=tmp_path / "out2"))
    ran = weir("run", second_job, check=0)
    assert "warning" not in ran.stderr, ran.stderr

    params = fitted_column_params(tmp_path / "out1", 1)
    mean = np.array([params[name]["mean"] for name in SCORE_FEATURES])
    scale = np.array([params[name]["scale"] for name in SCORE_FEATURES])
    x = np.column_stack([second[name].to_numpy() for name in SCORE_FEATURES])
    want = onnx_reference(model, (x - mean) / scale)["y"]
    got = read_output(tmp_path / "out2").sort_by("id")
    np.testing.assert_allclose(np.column_stack([got[f"y{i}"].to_numpy() for i in range(3)]), want, rtol=1e-5, atol=1e-5)
    reused = json.loads((tmp_path / "out2" / "_weir" / "fitted.json").read_text())["steps"][0]
    assert reused["reused_from"] == str(tmp_path / "out1")

    # Refitting on night 2 instead gives other scores: what the warning is about.
    refit_job = write_job(tmp_path / "n2b.toml", JOB.format(fitted="", src=tmp_path / "night2", model=model, features=features, out=tmp_path / "out2b"))
    weir("run", refit_job, check=0)
    refit = read_output(tmp_path / "out2b").sort_by("id")
    assert not np.allclose(refit["y0"].to_numpy(), got["y0"].to_numpy(), atol=1e-3)
