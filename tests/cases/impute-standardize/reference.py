"""scikit-learn's SimpleImputer(mean) then StandardScaler."""

from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
from sklearn.impute import SimpleImputer
from sklearn.preprocessing import StandardScaler


def check(out: Path, data: Path) -> None:
    names = [f"f_{f}" for f in range(8)]
    table = ds.dataset(data, format="parquet").to_table().sort_by("id")
    x = np.column_stack([table[n].to_numpy(zero_copy_only=False).astype(float) for n in names])
    want = StandardScaler().fit_transform(SimpleImputer(strategy="mean").fit_transform(x))
    got_table = ds.dataset(out, format="parquet").to_table().sort_by("id")
    got = np.column_stack([got_table[n].to_numpy() for n in names])
    assert got_table["id"].to_pylist() == table["id"].to_pylist()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
