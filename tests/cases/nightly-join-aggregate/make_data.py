"""A week of transactions in `date=` folders (a skewed customer holding a third of them,
refunds as negative amounts, unique timestamps), the customers table (one row per id, some
ids never bought), and `model.onnx`: a LogisticRegression trained on the reference's
features (`features`: DuckDB's join and group-by, NumPy's log, scikit-learn's
StandardScaler), exported with skl2onnx."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

FEATURES = ["n", "total", "avg_amount", "max_amount", "days", "last_amount", "log_total"]

QUERY = """
SELECT t.customer_id, c.segment, count(*) AS n, sum(amount) AS total, avg(amount) AS avg_amount,
       max(amount) AS max_amount, count(DISTINCT t.date) AS days, last(amount ORDER BY ts) AS last_amount
FROM read_parquet('{data}/*/*.parquet', hive_partitioning = true) t
JOIN read_parquet('{customers}/*.parquet') c USING (customer_id)
WHERE amount > 0
GROUP BY ALL HAVING count(*) >= 3
ORDER BY customer_id
"""


def write(folder: Path) -> None:
    rng = np.random.default_rng(35)
    data = folder / "data"
    ts = rng.permutation(7 * 2_000) * 37  # seconds into the week, all distinct
    for day in range(7):
        n = 2_000
        customer = rng.integers(0, 900, n)
        customer[rng.random(n) < 0.33] = 42
        amount = np.round(rng.lognormal(3, 1, n) * rng.choice([1, 1, 1, 1, -1], n), 2)
        part = data / f"date=2026-03-{day + 1:02d}"
        part.mkdir(parents=True)
        table = pa.table(
            {
                "customer_id": pa.array(customer, pa.int64()),
                "amount": amount,
                "ts": pa.array((np.datetime64("2026-03-01T00:00:00") + ts[day * n:(day + 1) * n].astype("timedelta64[s]")), pa.timestamp("us")),
            }
        )
        pq.write_table(table, part / "part-0.parquet", row_group_size=700)
    customers = folder / "customers"
    customers.mkdir()
    ids = np.arange(0, 800)  # 800..899 are not customers: the join drops them
    pq.write_table(
        pa.table({"customer_id": pa.array(ids, pa.int64()), "segment": rng.choice(["retail", "pro", "enterprise"], len(ids)), "since": rng.integers(2010, 2026, len(ids))}),
        customers / "part-0.parquet",
    )


def features(folder: Path):
    """DuckDB's groups, and scikit-learn's standardized features of them, in FEATURES order."""
    import duckdb
    from sklearn.preprocessing import StandardScaler

    groups = duckdb.sql(QUERY.format(data=folder / "data", customers=folder / "customers")).df()
    groups["log_total"] = np.log1p(groups["total"])
    scaled = StandardScaler().fit_transform(groups[FEATURES].to_numpy(dtype=float))
    return groups, scaled


def labels(groups) -> np.ndarray:
    return ((groups["avg_amount"] > groups["avg_amount"].median()) ^ (groups["segment"] == "pro")).to_numpy().astype(int)


def make(folder: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    write(folder)
    groups, x = features(folder)
    model = LogisticRegression(max_iter=1_000).fit(x, labels(groups))
    onnx_model = to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False})
    (folder / "model.onnx").write_bytes(onnx_model.SerializeToString())
