"""The `check` step's expectations against pandas computations over the same rows, at one
worker and at two processes of two workers (so `unique` counts keys repeated across
workers and processes), and what `on_fail` does to the run."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_output, write_job
from helpers import SHAPES_1_AND_2X2, shape_id

ACCEPTED = ["new", "paid", "shipped"]
# Values outside the accepted list: they must never appear in results, logs or errors.
SECRET_STATUSES = ["zz-secret-status-1", "zz-secret-status-2"]


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    """Four files of orders whose ids repeat across files, with null ids, statuses outside
    the accepted list, and amounts that are null, NaN, negative or too large. Returns the
    folder and a pandas frame with the same rows, where `amount_is_null` keeps Arrow's
    distinction between a null and a NaN amount."""
    rng = np.random.default_rng(7)
    src = tmp_path_factory.mktemp("check") / "src"
    src.mkdir()
    frames = []
    for index, rows in enumerate([2_500, 1_200, 3_300, 2_000]):
        order_id = rng.integers(0, 9_000, rows)
        order_id[rng.random(rows) < 0.3] = 42  # a skewed key: about a third of all rows
        id_null = rng.random(rows) < 0.01
        status = rng.choice(ACCEPTED + SECRET_STATUSES, rows, p=[0.3, 0.3, 0.38, 0.01, 0.01])
        status_null = rng.random(rows) < 0.02
        amount = rng.normal(50, 30, rows)
        amount[rng.random(rows) < 0.01] = np.nan
        amount_null = rng.random(rows) < 0.03
        discount = rng.integers(0, 10, rows)
        table = pa.table(
            {
                "order_id": pa.array(order_id, mask=id_null, type=pa.int64()),
                "status": pa.array(status, mask=status_null, type=pa.string()),
                "amount": pa.array(amount, mask=amount_null, type=pa.float64()),
                "discount": pa.array(discount, type=pa.int64()),
            }
        )
        pq.write_table(table, src / f"part-{index}.parquet", row_group_size=600)
        frames.append(
            pd.DataFrame(
                {
                    "order_id": pd.array(np.where(id_null, None, order_id.astype(object)), dtype="Int64"),
                    "status": pd.array(np.where(status_null, None, status.astype(object)), dtype="string"),
                    "amount": np.where(amount_null, 0.0, amount),
                    "amount_is_null": amount_null,
                    "discount": discount,
                }
            )
        )
    return src, pd.concat(frames, ignore_index=True)


CHECK_STEP = f"""
[[step]]
op = "filter"
expr = "discount < 8"

[[step]]
op = "check"
name = "orders are sane"
on_fail = "{{on_fail}}"
not_null = ["order_id", "status", "amount", "discount"]
unique = ["order_id"]
accepted_values = {{{{ status = {json.dumps(ACCEPTED)} }}}}
range = {{{{ amount = {{{{ min = 0, max = 100 }}}} }}}}
row_count = {{{{ min = 100, max = 1000000 }}}}
expression = "amount >= discount"
"""


def expected_results(frame: pd.DataFrame) -> dict:
    """What each expectation counts, computed with pandas on the rows the check sees."""
    seen = frame[frame["discount"] < 8]
    amount, amount_null = seen["amount"], seen["amount_is_null"]
    with_id = seen[seen["order_id"].notna()]
    return {
        ("not_null", "order_id"): int(seen["order_id"].isna().sum()),
        ("not_null", "status"): int(seen["status"].isna().sum()),
        ("not_null", "amount"): int(amount_null.sum()),
        ("not_null", "discount"): 0,
        ("accepted_values", "status"): int((seen["status"].notna() & ~seen["status"].isin(ACCEPTED)).sum()),
        # NaN is outside every range; a null is not checked.
        ("range", "amount"): int((~amount_null & ~((amount >= 0) & (amount <= 100))).sum()),
        # The filter language orders NaN above every number (as DuckDB does), so a NaN
        # amount satisfies `amount >= discount`; a null makes it null, which passes.
        ("expression", ""): int((~amount_null & ~np.isnan(amount) & (amount < seen["discount"])).sum()),
        ("unique", "order_id"): int(with_id.duplicated(subset=["order_id"], keep="first").sum()),
        ("row_count", ""): None,
    }, len(seen)


def run_check(weir, tmp_path, src, on_fail, shape, check):
    out = tmp_path / "out"
    text = f'name = "orders"\n[source]\nuri = "{src}"\n{CHECK_STEP.format(on_fail=on_fail)}\n[sink]\nuri = "{out}"\n'
    job = write_job(tmp_path / "job.toml", text)
    return out, weir("run", job, "--json", *shape, check=check)


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_warn_counts_every_expectation_as_pandas_does_and_commits_the_rows_unchanged(weir, tmp_path, orders, shape):
    src, frame = orders
    out, proc = run_check(weir, tmp_path, src, "warn", shape, check=0)
    expected, rows = expected_results(frame)
    manifest = json.loads((out / "_weir" / "manifest.json").read_text())
    got = {(c["expectation"], ",".join(c.get("columns", []))): c.get("failing_rows") for c in manifest["checks"]}
    assert got == expected
    for check in manifest["checks"]:
        assert check["step"] == 2 and check["name"] == "orders are sane" and check["on_fail"] == "warn"
        assert check["rows"] == rows
        failing = check.get("failing_rows")
        assert check["passed"] == (failing == 0 if failing is not None else True)
    # Every kind of expectation but not_null(discount) and row_count failed somewhere here.
    assert sum(not c["passed"] for c in manifest["checks"]) == 7
    # The summary carries the same results, and the rows pass through unchanged.
    summary = json.loads(proc.stdout)
    assert summary["checks"] == manifest["checks"]
    output = read_output(out).to_pandas()
    assert len(output) == rows
    assert sorted(output["discount"]) == sorted(frame[frame["discount"] < 8]["discount"])
    for secret in SECRET_STATUSES:
        assert secret not in proc.stderr and secret not in json.dumps(manifest)


def test_fail_stops_the_run_before_it_commits_and_names_each_failed_expectation(weir, tmp_path, orders):
    src, frame = orders
    out, proc = run_check(weir, tmp_path, src, "fail", ["-p", "2", "-w", "2"], check=2)
    expected, rows = expected_results(frame)
    assert "step 2 (check)" in proc.stderr and "check 'orders are sane'" in proc.stderr
    assert "7 of 9 expectations failed" in proc.stderr, proc.stderr
    repeats = expected[("unique", "order_id")]
    assert f"unique(order_id): {repeats} of " in proc.stderr, proc.stderr
    assert f"accepted_values(status): {expected[('accepted_values', 'status')]} of {rows} rows" in proc.stderr
    for secret in SECRET_STATUSES:
        assert secret not in proc.stderr
    # Nothing was committed, nor left staged.
    assert not (out / "_SUCCESS").exists() and not (out / "_weir" / "manifest.json").exists()
    assert not any(p.suffix == ".parquet" for p in out.rglob("*")) if out.exists() else True


def test_expectations_that_hold_let_a_failing_check_commit(weir, tmp_path, orders):
    src, frame = orders
    out = tmp_path / "out"
    step = (
        '[[step]]\nop = "check"\nnot_null = ["discount"]\nrange = { discount = { min = 0, max = 9 } }\n'
        f'row_count = {{ min = {len(frame)}, max = {len(frame)} }}\naccepted_values = {{ discount = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] }}\n'
    )
    job = write_job(tmp_path / "job.toml", f'name = "orders"\n[source]\nuri = "{src}"\n{step}[sink]\nuri = "{out}"\n')
    proc = weir("run", job, "-w", "2", check=0)
    assert "checks: 4 of 4 expectations passed" in proc.stderr
    manifest = json.loads((out / "_weir" / "manifest.json").read_text())
    assert [c["passed"] for c in manifest["checks"]] == [True] * 4
    assert manifest["rows"] == len(frame)


@pytest.mark.parametrize(
    "step, message",
    [
        ('not_null = ["nope"]', "column selector 'nope' matches no column"),
        ("accepted_values = { order_id = [1.5] }", "cannot hold exactly"),
        ("range = { status = { min = 0 } }", "range: column 'status' is Utf8, not a number"),
        ("row_count = { min = 5, max = 1 }", "row_count needs"),
        ('on_fail = "reject"\nnot_null = ["status"]', "has no sink.rejects to write them to"),
        ('on_fail = "bounce"\nnot_null = ["status"]', "unknown variant `bounce`"),
        ("", "a check step needs at least one"),
        (f"accepted_values = {{ status = {json.dumps([str(i) for i in range(1001)])} }}", "needs 1 to 1000 values"),
    ],
)
def test_bad_check_specs_are_refused_before_reading(weir, tmp_path, orders, step, message):
    src, _ = orders
    job = write_job(tmp_path / "job.toml", f'name = "orders"\n[source]\nuri = "{src}"\n[[step]]\nop = "check"\n{step}\n[sink]\nuri = "{tmp_path / "out"}"\n')
    proc = weir("validate", job, check=2)
    assert message in proc.stderr, proc.stderr
