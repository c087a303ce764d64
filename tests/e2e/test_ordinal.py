"""`ordinal` against scikit-learn's OrdinalEncoder, at one worker and at two processes of two
workers (the categories are gathered across workers), and reused on data with a category
the fit never saw: an error naming the column and row (never the value), or a null."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.preprocessing import OrdinalEncoder

from conftest import read_output, write_job
from helpers import SHAPES_1_AND_2X2, shape_id

CITIES = ["Zürich", "Berlin", "berlin", "Ålesund", "Paris", "Austin"]


def write(folder, seed, cities=CITIES, files=3):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    tables = []
    for index in range(files):
        rows = 700 + 100 * index
        table = pa.table(
            {
                "id": pa.array(np.arange(rows) + index * 10_000, pa.int64()),
                "city": pa.array(rng.choice(cities, rows), mask=rng.random(rows) < 0.05, type=pa.string()),
                "tier": pa.array(rng.choice([3, -1, 7, 100], rows), mask=rng.random(rows) < 0.05, type=pa.int32()),
            }
        )
        pq.write_table(table, folder / f"part-{index}.parquet", row_group_size=250)
        tables.append(table)
    return pa.concat_tables(tables).sort_by("id")


def job(src, out, extra="", on_unknown="error"):
    return (
        f'name = "ordinal"\n{extra}\n[source]\nuri = "{src}"\n[[step]]\nop = "ordinal"\ncolumns = ["city", "tier"]\n'
        f'on_unknown = "{on_unknown}"\noutput = "{{col}}_code"\n[sink]\nuri = "{out}"\nmode = "overwrite"\n'
    )


def sklearn_codes(train: pa.Table, data: pa.Table, unknown_value=None):
    """OrdinalEncoder fitted on `train`'s values (nulls as missing), applied to `data`."""
    def frame(table):
        city = np.array([np.nan if v is None else v for v in table.column("city").to_pylist()], dtype=object)
        tier = np.array([np.nan if v is None else float(v) for v in table.column("tier").to_pylist()], dtype=object)
        return np.column_stack([city, tier])
    options = {"handle_unknown": "use_encoded_value", "unknown_value": np.nan} if unknown_value == "nan" else {}
    # One encoder per column: a column of strings and one of numbers sort apart.
    codes = []
    for column in range(2):
        encoder = OrdinalEncoder(encoded_missing_value=np.nan, **options).fit(frame(train)[:, [column]])
        codes.append(encoder.transform(frame(data)[:, [column]])[:, 0])
    return codes


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_codes_equal_scikit_learns_ordinal_encoder(weir, tmp_path, shape):
    table = write(tmp_path / "src", 3)
    weir("run", write_job(tmp_path / "job.toml", job(tmp_path / "src", tmp_path / "out")), *shape, check=0)
    got = read_output(tmp_path / "out").sort_by("id")
    assert got.column("city").equals(table.column("city")) and got.column("tier").equals(table.column("tier"))
    city, tier = sklearn_codes(table, table)
    np.testing.assert_array_equal(got.column("city_code").to_numpy(zero_copy_only=False), city.astype(float))
    np.testing.assert_array_equal(got.column("tier_code").to_numpy(zero_copy_only=False), tier.astype(float))


def test_reused_categories_meet_an_unseen_value(weir, tmp_path):
    train = write(tmp_path / "train", 3)
    weir("run", write_job(tmp_path / "train.toml", job(tmp_path / "train", tmp_path / "fitted")), "-w", "2", check=0)
    new = write(tmp_path / "new", 9, cities=CITIES + ["Zzz-secret-town"], files=1)
    reuse = f'fitted = "{tmp_path / "fitted"}"'
    refused = weir("run", write_job(tmp_path / "err.toml", job(tmp_path / "new", tmp_path / "err", reuse)), check=2)
    assert "column 'city_code'" in refused.stderr and "not seen when the categories were fitted" in refused.stderr, refused.stderr
    assert "Zzz-secret-town" not in refused.stderr and not (tmp_path / "err" / "_SUCCESS").exists()
    weir("run", write_job(tmp_path / "null.toml", job(tmp_path / "new", tmp_path / "null", reuse, on_unknown="null")), check=0)
    got = read_output(tmp_path / "null").sort_by("id")
    city, tier = sklearn_codes(train, new, unknown_value="nan")
    np.testing.assert_array_equal(got.column("city_code").to_numpy(zero_copy_only=False), city.astype(float))
    np.testing.assert_array_equal(got.column("tier_code").to_numpy(zero_copy_only=False), tier.astype(float))
    assert np.isnan(city).sum() > got.column("city").null_count  # the unseen town became null too


GRADES = {"A": 500, "B": 300, "C": 300, "D": 300, "E": 100, "F": 50}


def write_grades(folder, seed, unseen=False):
    """`grade` with exact counts (three tied at 300, so `max_categories` must break ties as
    NumPy's stable argsort does), nulls; `city` skewed; split over three files."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    grades = np.array([g for g, n in GRADES.items() for _ in range(n)] + (["Z"] * 7 if unseen else []), dtype=object)
    rng.shuffle(grades)
    rows = len(grades)
    grade_null = rng.random(rows) < 0.04
    city = rng.choice(CITIES + ["Oslo"], rows, p=[0.4, 0.25, 0.15, 0.1, 0.05, 0.03, 0.02])
    table = pa.table(
        {
            "id": pa.array(np.arange(rows), pa.int64()),
            "grade": pa.array(grades, mask=grade_null, type=pa.string()),
            "city": pa.array(city, mask=rng.random(rows) < 0.05, type=pa.string()),
        }
    )
    for index, start in enumerate(range(0, rows, rows // 3 + 1)):
        pq.write_table(table.slice(start, rows // 3 + 1), folder / f"part-{index}.parquet", row_group_size=200)
    return table


INFREQUENT_STEPS = """
[[step]]
op = "ordinal"
columns = ["grade"]
max_categories = 3
unknown_value = -1
encoded_missing_value = -2

[[step]]
op = "ordinal"
columns = ["city"]
min_frequency = 0.06
max_categories = 4
on_unknown = "null"
"""


def infrequent_reference(train: pa.Table, data: pa.Table):
    def values(table, name):
        return np.array([np.nan if v is None else v for v in table.column(name).to_pylist()], dtype=object)[:, None]

    grade = OrdinalEncoder(max_categories=3, handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-2)
    city = OrdinalEncoder(min_frequency=0.06, max_categories=4, handle_unknown="use_encoded_value", unknown_value=np.nan)
    grade.fit(values(train, "grade"))
    city.fit(values(train, "city"))
    return grade.transform(values(data, "grade"))[:, 0], city.transform(values(data, "city"))[:, 0]


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_infrequent_categories_and_codes_for_unknown_and_missing_equal_scikit_learns(weir, tmp_path, shape):
    """`min_frequency` (a fraction of the rows), `max_categories` (ties broken as scikit-learn
    does), `unknown_value` and `encoded_missing_value` against OrdinalEncoder with the same
    options; then the fitted categories on data holding a grade the fit never saw."""
    train = write_grades(tmp_path / "src", 5)
    out = tmp_path / "out"
    text = f'name = "ordinal"\n[source]\nuri = "{tmp_path / "src"}"\n{INFREQUENT_STEPS}\n[sink]\nuri = "{out}"\nmode = "overwrite"\n'
    weir("run", write_job(tmp_path / "job.toml", text), *shape, check=0)
    got = read_output(out).sort_by("id")
    grade, city = infrequent_reference(train, train)
    np.testing.assert_array_equal(np.array(got.column("grade").to_pylist(), dtype=float), grade)
    np.testing.assert_array_equal(np.array(got.column("city").to_pylist(), dtype=float), city)
    assert set(grade) == {-2.0, 0.0, 1.0, 2.0}, "the test data must hit every kind of code"

    other = write_grades(tmp_path / "other", 6, unseen=True)
    again = tmp_path / "again"
    reuse = f'name = "ordinal"\nfitted = "{out}"\n[source]\nuri = "{tmp_path / "other"}"\n{INFREQUENT_STEPS}\n[sink]\nuri = "{again}"\n'
    weir("run", write_job(tmp_path / "reuse.toml", reuse), *shape, check=0)
    got = read_output(again).sort_by("id")
    grade, city = infrequent_reference(train, other)
    np.testing.assert_array_equal(np.array(got.column("grade").to_pylist(), dtype=float), grade)
    assert (grade == -1).sum() == 7


def test_codes_that_collide_with_a_category_are_refused(weir, tmp_path):
    write_grades(tmp_path / "src", 7)
    text = f'name = "ordinal"\n[source]\nuri = "{tmp_path / "src"}"\n{INFREQUENT_STEPS.replace("unknown_value = -1", "unknown_value = 1")}\n[sink]\nuri = "{tmp_path / "out"}"\n'
    proc = weir("run", write_job(tmp_path / "job.toml", text), check=2)
    assert "unknown_value = 1 is the code of a category of column 'grade'" in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    bad = text.replace("max_categories = 3", "max_categories = 0")
    proc = weir("validate", write_job(tmp_path / "bad.toml", bad), check=2)
    assert "max_categories must be at least 1" in proc.stderr
