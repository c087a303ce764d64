"""The README's first command: the demo job on the bundled data, checked against pandas and
scikit-learn (with its output redirected to a temporary directory)."""

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from sklearn.preprocessing import StandardScaler

from conftest import REPO, read_output, write_job


def test_the_demo_job_matches_pandas_and_scikit_learn(weir, tmp_path):
    out = tmp_path / "out"
    text = (REPO / "demo" / "job.toml").read_text()
    text = text.replace('uri = "data/"           # relative paths are relative to this file', f'uri = "{REPO / "demo" / "data"}/"').replace('uri = "output/"', f'uri = "{out}/"')
    job = write_job(tmp_path / "demo.toml", text)
    weir("run", job, "-w", "2", check=0)

    raw = pd.concat([pq.read_table(p).to_pandas() for p in sorted((REPO / "demo" / "data").glob("*.parquet"))])
    frame = raw[["customer_id", "age", "income", "tenure_months", "country", "email"]].copy()
    frame["age"] = frame["age"].astype(float)
    tenure = pd.to_numeric(frame["tenure_months"], errors="coerce")
    frame["tenure_months"] = tenure.where(tenure == tenure.round())  # non-integers cannot be cast
    keep = (frame["age"] >= 18) & (frame["age"] < 100) & (frame["country"].isin(["DE", "FR", "US"]) | frame["income"].notna())
    frame = frame[keep & frame["tenure_months"].notna()]

    fitted = json.loads((out / "_weir" / "fitted.json").read_text())
    median = fitted["steps"][0]["params"]["columns"]["income"]["value"]
    present = np.sort(frame["income"].dropna().to_numpy())
    lo, hi = np.searchsorted(present, median, "left"), np.searchsorted(present, median, "right")
    middle = (len(present) - 1) / 2
    assert max(0, lo - middle, middle - hi) <= 0.001 * len(present)  # within the sketch's rank bound

    frame["income"] = frame["income"].fillna(median)
    columns = ["age", "income", "tenure_months"]
    scaler = StandardScaler().fit(frame[columns].to_numpy())
    expected = frame.assign(**dict(zip(columns, scaler.transform(frame[columns].to_numpy()).T))).sort_values("customer_id")

    result = read_output(out).to_pandas().sort_values("id")
    assert list(result.columns) == ["id", "age", "income", "tenure_months", "country", "email"]
    assert result["id"].tolist() == expected["customer_id"].tolist()
    np.testing.assert_allclose(result[columns].to_numpy(), expected[columns].to_numpy(), rtol=1e-9, atol=1e-12)
    assert set(result["email"].dropna()) == {"***"}
    assert result["email"].isna().tolist() == expected["email"].isna().tolist()
