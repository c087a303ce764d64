"""`onehot` against scikit-learn's OneHotEncoder (`sparse_output=False`), at one worker and at
two processes of two workers (the categories are counted across workers): column names as
`get_feature_names_out` gives them, nulls as a category of their own, `drop`, infrequent
categories, given categories and unknown values. The output's columns are the fitted
categories, so the steps after a `onehot` are bound once it is fitted: a later step that
names a column the encoder did not make, or an append whose new categories change the
output's schema, fails before anything is committed."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from conftest import data_files, read_output, write_job
from helpers import SHAPES_1_AND_2X2, shape_id

COLORS = ["red", "green", "blue", "Teal", "ünïcode", ""]
WEIGHTS = [0.4, 0.25, 0.2, 0.1, 0.04, 0.01]


def write(folder, seed, colors=COLORS, files=3):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    tables = []
    weights = np.array(WEIGHTS[: len(colors)] + [0.02] * (len(colors) - len(WEIGHTS)))
    for index in range(files):
        rows = 600 + 150 * index
        table = pa.table(
            {
                "id": pa.array(np.arange(rows) + index * 10_000, pa.int64()),
                "color": pa.array(rng.choice(colors, rows, p=weights / weights.sum()), mask=rng.random(rows) < 0.04),
                "tier": pa.array(rng.choice([3, -1, 7], rows), mask=rng.random(rows) < 0.03, type=pa.int32()),
                "x": pa.array(rng.normal(size=rows)),
            }
        )
        pq.write_table(table, folder / f"part-{index}.parquet", row_group_size=200)
        tables.append(table)
    return pa.concat_tables(tables).sort_by("id")


def job(src, out, options="", after="", extra=""):
    return (
        f'name = "onehot"\n{extra}\n[source]\nuri = "{src}"\n'
        f'[[step]]\nop = "onehot"\ncolumns = ["color", "tier"]\n{options}\n{after}'
        f'[sink]\nuri = "{out}"\nmode = "overwrite"\n'
    )


def column(table, name):
    """A column as scikit-learn takes it: an object array with None for a null."""
    return np.array(table.column(name).to_pylist(), dtype=object).reshape(-1, 1)


def reference(train, data, **options):
    """One encoder per column (a column of strings and one of integers sort apart), fitted on
    `train`: the names and the values, in Weir's column order."""
    names, blocks = [], []
    for name in ("color", "tier"):
        per_column = {k: (v[name] if isinstance(v, dict) else v) for k, v in options.items()}
        per_column = {k: v for k, v in per_column.items() if v is not None}
        encoder = OneHotEncoder(sparse_output=False, **per_column).fit(column(train, name))
        names.extend(encoder.get_feature_names_out([name]))
        blocks.append(encoder.transform(column(data, name)))
    return names, np.column_stack(blocks)


def encoded(got, names):
    return np.column_stack([got.column(n).to_numpy() for n in names])


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_columns_equal_scikit_learns_one_hot_encoder_and_later_steps_bind_to_them(weir, tmp_path, shape):
    table = write(tmp_path / "src", 3)
    after = '[[step]]\nop = "standardize"\ncolumns = ["x"]\n[[step]]\nop = "drop"\ncolumns = ["tier_None"]\n'
    job_path = write_job(tmp_path / "job.toml", job(tmp_path / "src", tmp_path / "out", after=after))
    checked = weir("validate", job_path, check=0)
    assert "known once step 1 (onehot) is fitted" in checked.stdout, checked.stdout
    weir("run", job_path, *shape, check=0)
    got = read_output(tmp_path / "out").sort_by("id")
    names, want = reference(table, table)
    dropped = names.index("tier_None")
    names.pop(dropped)
    assert got.column_names == ["id", *names, "x"]
    np.testing.assert_array_equal(encoded(got, names), np.delete(want, dropped, axis=1))
    assert all(got.schema.field(n).type == pa.float64() for n in names)
    x = StandardScaler().fit_transform(table.column("x").to_numpy().reshape(-1, 1))[:, 0]
    np.testing.assert_allclose(got.column("x").to_numpy(), x, rtol=1e-12, atol=1e-14)


OPTIONS = {
    "drop-first-min-count": ('drop = "first"\nmin_frequency = 60', {"drop": "first", "min_frequency": 60}),
    "if-binary-max-categories": (
        'drop = "if_binary"\nmax_categories = 3\nhandle_unknown = "infrequent_if_exist"',
        {"drop": "if_binary", "max_categories": 3, "handle_unknown": "infrequent_if_exist"},
    ),
    "fraction-ignore": ('min_frequency = 0.05\nhandle_unknown = "ignore"', {"min_frequency": 0.05, "handle_unknown": "ignore"}),
    "given-categories": (
        'handle_unknown = "ignore"\ncategories = { color = ["red", "zebra", "blue"], tier = [7, 3] }',
        {"handle_unknown": "ignore", "categories": {"color": [["red", "zebra", "blue"]], "tier": [[7, 3]]}},
    ),
}


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_drop_infrequent_and_given_categories_equal_scikit_learns(weir, tmp_path, shape, options):
    toml_options, sklearn_options = OPTIONS[options]
    table = write(tmp_path / "src", 5)
    weir("run", write_job(tmp_path / "job.toml", job(tmp_path / "src", tmp_path / "out", toml_options)), *shape, check=0)
    got = read_output(tmp_path / "out").sort_by("id")
    names, want = reference(table, table, **sklearn_options)
    assert got.column_names == ["id", *names, "x"], got.column_names
    np.testing.assert_array_equal(encoded(got, names), want)


def test_reused_categories_meet_an_unseen_value(weir, tmp_path):
    train = write(tmp_path / "train", 3)
    options = 'max_categories = 4\nhandle_unknown = "{}"'
    fit_job = job(tmp_path / "train", tmp_path / "fitted", options.format("error"))
    weir("run", write_job(tmp_path / "train.toml", fit_job), "-w", "2", check=0)
    new = write(tmp_path / "new", 9, colors=COLORS + ["Zzz-secret-town"], files=1)
    reuse = f'fitted = "{tmp_path / "fitted"}"'
    for handle in ("error", "ignore", "infrequent_if_exist"):
        out = tmp_path / f"out-{handle}"
        job_path = write_job(tmp_path / f"{handle}.toml", job(tmp_path / "new", out, options.format(handle) + "\n" + reuse))
        # Reused categories: the whole output schema is known before a row is read.
        checked = weir("validate", job_path, check=0)
        assert "color_infrequent_sklearn: Float64 not null" in checked.stdout, checked.stdout
        if handle == "error":
            refused = weir("run", job_path, check=2)
            assert "step 1 (onehot)" in refused.stderr and "column 'color'" in refused.stderr, refused.stderr
            assert "Zzz-secret-town" not in refused.stderr and not (out / "_weir" / "manifest.json").exists()
            continue
        weir("run", job_path, check=0)
        got = read_output(out).sort_by("id")
        names, want = reference(train, new, max_categories=4, handle_unknown=handle)
        assert got.column_names == ["id", *names, "x"]
        np.testing.assert_array_equal(encoded(got, names), want)


def test_bad_encodings_and_late_bound_steps_fail_before_anything_is_committed(weir, tmp_path):
    write(tmp_path / "src", 3)
    src, out = tmp_path / "src", tmp_path / "out"

    def refused(name, text, *needles):
        proc = weir("run", write_job(tmp_path / f"{name}.toml", text), "-w", "2", check=2)
        for needle in needles:
            assert needle in proc.stderr, (name, proc.stderr)
        assert not (out / "_weir" / "manifest.json").exists(), name

    numeric = job(src, out).replace('columns = ["color", "tier"]', 'columns = ["color", "x"]')
    refused("numeric", numeric, "step 1 (onehot)", "column 'x' is Float64")
    later = '[[step]]\nop = "select"\ncolumns = ["id", "color_purple"]\n'
    refused("later", job(src, out, after=later), "step 2 (select)", "color_purple")
    wide = tmp_path / "wide"
    wide.mkdir()
    rows = 5_000
    pq.write_table(
        pa.table({"id": np.arange(rows), "color": [f"c{i}" for i in range(rows)], "tier": np.ones(rows, np.int32)}),
        wide / "part-0.parquet",
    )
    refused("wide", job(wide, out), "column 'color' has 5000 categories", "max_categories")


def test_an_append_whose_categories_change_the_schema_is_refused(weir, tmp_path):
    write(tmp_path / "first", 3, colors=COLORS[:3])
    write(tmp_path / "second", 4, colors=COLORS[:4])
    out = tmp_path / "out"

    def run(src, check):
        text = job(src, out).replace('mode = "overwrite"', 'mode = "append"')
        return weir("run", write_job(tmp_path / "job.toml", text), "-w", "2", check=check)

    run(tmp_path / "first", 0)
    before = json.loads((out / "_weir" / "manifest.json").read_text())
    files = data_files(out)
    proc = run(tmp_path / "second", 2)
    assert "cannot append" in proc.stderr and "color_Teal" in proc.stderr, proc.stderr
    assert json.loads((out / "_weir" / "manifest.json").read_text()) == before
    assert data_files(out) == files


def test_a_check_after_the_encoder_rejects_rows_by_its_columns(weir, tmp_path):
    table = write(tmp_path / "src", 3)
    after = '[[step]]\nop = "check"\non_fail = "reject"\nexpression = "color_red = 0"\n'
    text = job(tmp_path / "src", tmp_path / "out", after=after).replace(
        'mode = "overwrite"', f'mode = "overwrite"\nrejects = "{tmp_path / "rejects"}"'
    )
    weir("run", write_job(tmp_path / "job.toml", text), "-w", "2", check=0)
    red = np.array([v == "red" for v in table.column("color").to_pylist()])
    got = read_output(tmp_path / "out").sort_by("id")
    assert got.column("id").to_pylist() == table.column("id").filter(pa.array(~red)).to_pylist()
    rejected = read_output(tmp_path / "rejects")
    want = table.column("id").filter(pa.array(red)).to_pylist()
    assert sorted(int(i) for i in rejected.column("id").to_pylist()) == want
    assert set(rejected.column("_reject_step").to_pylist()) == {2}
