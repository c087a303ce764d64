"""`derive` (columns computed from SQL expressions) against DuckDB, the independent reference.

One generated dataset (ints and floats with nulls, NaN, ±inf and ±0.0, unicode and padded
strings, timestamps before and after 1970, dates) is shared by the module. One job derives
about 190 columns covering every operator and function of the expression language, at one
worker and at two processes of two workers; its whole output (column order, Arrow types and
every value) must equal `SELECT <the same expressions> FROM read_parquet(...)` in DuckDB.
Decimal literals (`2.5`) are DOUBLE in Weir, so DuckDB is given them as DOUBLE too.

Errors: integer overflows (`*`, `+`, unary `-`, `abs`, `//`, `%`, `round`, at 64 and 32 bits)
and integer divisions by zero fail the run (exit 2) naming the step and the expression, never
a value, with nothing committed; an unknown column, an unknown
function, a type mismatch and a syntax error are refused by `weir validate` with a caret under
the culprit. Finally a derived column is filtered on and standardized (DuckDB + scikit-learn).
"""

import json
import re

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sklearn.preprocessing import StandardScaler

from conftest import data_files, read_output, write_job
from helpers import SHAPES_1_AND_2X2, shape_id

NAMES = ["Zürich", "ß", "straße", "  padded  ", " lead", "trail ", "", "   ", "abc", "Hello World", "ÅLESUND", "\tTab ", "arc", "bar", "Z", "Cafe\u0301", "🙂 ok"]
SPECIAL_FLOATS = [np.nan, np.inf, -np.inf, -0.0, 0.0, 2.5, -2.5, 0.5, -0.5, 1.5, 2.675, -2.675, 1.005, 0.125, 1234.5, 1e20, 1e-7]
US = 1_000_000
SPECIAL_TIMESTAMPS = [  # microseconds since 1970: around the epoch, a Sunday, ISO week 53, a leap day
    -US // 2,
    0,
    -1,
    1_704_585_600 * US,  # 2024-01-07 00:00:00 (a Sunday)
    1_609_502_400 * US,  # 2021-01-01 12:00:00 (ISO week 53 of 2020)
    951_868_799 * US + 999_999,  # 2000-02-29 23:59:59.999999
    -86_400 * US * 365 + 1,  # 1969-01-01 00:00:00.000001
]
SPECIAL_DATES = [-1, 0, 18_628, 19_729, 11_016, -365]  # 1969-12-31, 1970-01-01, 2021-01-01, 2024-01-07, 2000-02-29, 1969-01-01


def generated_table(rng: np.random.Generator, start: int, rows: int) -> pa.Table:
    mask = lambda p: rng.random(rows) < p  # noqa: E731
    n = rng.integers(-1000, 1001, rows)
    n[rng.random(rows) < 0.05] = 0
    k = rng.choice(np.r_[np.arange(-50, 0), np.arange(1, 51)], rows).astype(np.int32)  # never 0: `n // k`, `n % k`
    amount = rng.normal(0, 100, rows)
    special = rng.random(rows) < 0.25
    amount[special] = rng.choice(SPECIAL_FLOATS, special.sum())
    ts = rng.integers(-5 * 365 * 86_400 * US, 65 * 365 * 86_400 * US, rows)
    special = rng.random(rows) < 0.05
    ts[special] = rng.choice(SPECIAL_TIMESTAMPS, special.sum())
    days = rng.integers(-3000, 25_000, rows).astype(np.int32)
    special = rng.random(rows) < 0.05
    days[special] = rng.choice(SPECIAL_DATES, special.sum())
    return pa.table(
        {
            "id": pa.array(np.arange(start, start + rows), pa.int64()),
            "n": pa.array(n, pa.int64(), mask=mask(0.1)),
            "k": pa.array(k, pa.int32(), mask=mask(0.05)),
            "amount": pa.array(amount, pa.float64(), mask=mask(0.08)),
            "name": pa.array(rng.choice(NAMES, rows), pa.string(), mask=mask(0.07)),
            "ts": pa.array(ts, pa.timestamp("us"), mask=mask(0.05)),
            "d": pa.array(days, pa.date32(), mask=mask(0.05)),
        }
    )


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three files of 700 to 900 rows in row groups of 250; returns (folder, table by id)."""
    rng = np.random.default_rng(20261207)
    src = tmp_path_factory.mktemp("derive") / "src"
    src.mkdir()
    tables = []
    for index in range(3):
        table = generated_table(rng, index * 10_000, 700 + 100 * index)
        pq.write_table(table, src / f"part-{index}.parquet", row_group_size=250)
        tables.append(table)
    return src, pa.concat_tables(tables).sort_by("id")


# Name -> expression, in the order written. `amount`, `k` and `name` are input columns:
# they are replaced in place; every other name is appended. Every expression reads the
# step's input (`log_amount` sees the raw `amount`, not its absolute value).
EXPRESSIONS = {
    "amount": "abs(amount)",
    "log_amount": "ln(1 + amount)",
    "big": "case when amount > 100 then 1 else 0 end",
    # literals and columns
    "lit_int": "42",
    "lit_bigint": "3000000000",
    "lit_double": "2.5",
    "lit_exp": "1.5e2 + n",
    "lit_str": "'it''s'",
    "lit_bool": "true",
    "quoted": '"n" + "k"',
    # arithmetic
    "add": "n + k",
    "k_arith": "k * 3 - 1",
    "neg": "-n",
    "neg_k": "-k",
    "cube": "n * n * n",
    "div": "n / k",
    "div_zero": "amount / 0",
    "div_int_zero": "n / (n - n)",
    "int_div": "n // k",
    "int_div_k": "k // 4",
    "int_div_neg": "-n // 7",
    "mod": "n % k",
    "mod_k": "-k % 3",
    "mixed": "k + n * amount",
    "half": "n * 0.5",
    "precedence": "2 + 3 * k - n / 4 * (1 - k)",
    "neg_paren": "-(amount - 1)",
    "precedence_div": "n - 7 // 2 * 3 % 5 + k // 3 * 2 % 7",
    # comparisons and logic (NaN is the largest double and equals itself; -0.0 = 0.0)
    "eq": "n = k",
    "ne": "n != 0",
    "ne2": "k <> 7",
    "lt": "amount < 0",
    "le": "amount <= 0",
    "gt": "amount > 100",
    "ge": "n >= k",
    "eq_zero": "amount = 0",
    "eq_nan": "amount = cast('nan' as double)",
    "str_lt": "name < 'b'",
    "ts_lt": "ts < cast('2000-01-01' as timestamp)",
    "d_ge": "d >= cast('1999-12-31' as date)",
    "and_": "n > 0 and amount > 0",
    "or_": "n > 0 or amount > 0",
    "not_": "not (amount > 0)",
    "not_precedence": "not amount > 0 and n > 0",
    "kleene": "(n is null or k > 0) and not (name = '')",
    "is_null": "name is null",
    "not_null": "amount is not null",
    "in_": "k in (1, 2, 3, -5)",
    "in_null": "n in (1, 2, null)",
    "not_in": "name not in ('ß', 'abc')",
    "not_in_null": "k not in (1, null)",
    "in_str": "name in ('Zürich', '')",
    "between_": "amount between -1 and 1",
    "not_between": "n not between -10 and 10",
    "between_null": "k between n and 20",
    "bool_eq": "(n > 0) = (k > 0)",
    "str_between": "name between 'a' and 'm'",
    "div_is_null": "(n / k) is null",
    # case, coalesce, nullif, casts
    "case_str": "case when n is null then 'none' when n < 0 then 'neg' else 'pos' end",
    "case_no_else": "case when k > 0 then k end",
    "case_simple": "case k when 1 then 'one' when -1 then 'minus one' else 'other' end",
    "case_double": "case when n > 0 then n else amount end",
    "case_int": "case when n > 0 then n else k end",
    "coal": "coalesce(n, k, 0)",
    "coal_str": "coalesce(name, 'missing')",
    "coal_double": "coalesce(amount, n)",
    "nullif_k": "nullif(k, 1)",
    "nullif_s": "nullif(name, '')",
    "nullif_zero": "nullif(amount, 0)",
    "k": "cast(k as bigint)",
    "cast_double": "cast(n as double)",
    "cast_float": "cast(amount as float)",
    "cast_int": "cast(n as integer)",
    "cast_small": "cast(n as smallint)",
    "cast_tiny": "cast(k as tinyint)",
    "cast_round": "cast(case when amount between -1e6 and 1e6 then amount end as bigint)",
    "cast_bool": "cast(n as boolean)",
    "cast_bool_double": "cast(amount as boolean)",
    "cast_bool_str": "cast('true' as boolean)",
    "cast_str_int": "cast(cast(k as varchar) as integer)",
    "vc_int": "n::varchar",
    "vc_double": "amount::varchar",
    "vc_ts": "cast(ts as varchar)",
    "vc_date": "cast(d as varchar)",
    "vc_bool": "cast(n > 0 as varchar)",
    "cast_date": "cast(ts as date)",
    "cast_ts": "d::timestamp",
    "cast_ts_lit": "cast('2024-02-29 12:34:56' as timestamp)",
    "cast_ts_iso": "cast('2024-02-29T12:34:56.789' as timestamp)",
    "cast_bool_int": "cast(amount > 0 as integer)",
    "concat_op": "name || '!' || cast(k as varchar)",
    # math
    "abs_n": "abs(n)",
    "abs_k": "abs(k)",
    "sqrt_": "sqrt(amount)",
    "sqrt_n": "sqrt(n)",
    "cbrt_": "cbrt(amount)",
    "exp_": "exp(amount / 100)",
    "exp_k": "exp(k)",
    "ln_": "ln(amount)",
    "log_": "log(amount)",
    "log_base": "log(2, n)",
    "log_base_col": "log(k, amount)",
    "log10_": "log10(n)",
    "log2_": "log2(k)",
    "pow_": "pow(amount, 2)",
    "power_": "power(k, 3)",
    "pow_half": "pow(n, 0.5)",
    "pow_cols": "pow(n, k)",
    "round_": "round(amount)",
    "round_2": "round(amount, 2)",
    "round_neg": "round(amount, -1)",
    "round_n": "round(n)",
    "round_n_neg": "round(n, -1)",
    "floor_": "floor(amount)",
    "ceil_": "ceil(amount)",
    "ceiling_n": "ceiling(n)",
    "sign_": "sign(amount)",
    "sign_n": "sign(n)",
    "greatest_": "greatest(n, k, 0)",
    "least_": "least(amount, n)",
    "greatest_double": "greatest(amount, 0)",
    "least_double": "least(amount, 0)",
    "least_str": "least(name, 'm')",
    "greatest_null": "greatest(n, null)",
    # strings
    "name": "upper(name)",
    "lower_": "lower(name)",
    "trim_": "trim(name)",
    "ltrim_": "ltrim(name)",
    "rtrim_": "rtrim(name)",
    "length_": "length(name)",
    "sub_2_3": "substr(name, 2, 3)",
    "sub_0_2": "substr(name, 0, 2)",
    "sub_neg": "substr(name, -3)",
    "sub_neg_far": "substring(name, -8, 3)",
    "sub_past": "substring(name, 10)",
    "sub_1": "substring(name, 1, 1)",
    "sub_len_0": "substr(name, 2, 0)",
    "sub_neg_2": "substr(name, -3, 2)",
    "concat_": "concat(name, '/', cast(k as varchar))",
    "concat_null": "concat(name, null, '.')",
    "concat_nulls": "concat(null, name, null)",
    "replace_": "replace(name, 'a', 'AA')",
    "replace_space": "replace(name, ' ', '')",
    "replace_empty": "replace(name, '', 'x')",
    "starts_": "starts_with(name, 'Z')",
    "re_": "regexp_matches(name, 'ü|ß')",
    "re_space": r"regexp_matches(name, '^\s')",
    "re_search": "regexp_matches(name, 'r.c')",
    "re_empty": "regexp_matches(name, '')",
    "re_word": r"regexp_matches(name, '^\w+$')",
    "length_concat": "length(name || 'ß')",
    "like_": "name like 'Z%'",
    "like_under": "name like '_r_'",
    "ilike_": "name ilike '%A%'",
    "ilike_unicode": "name ilike 'zÜ%'",
    "not_like": "name not like '% %'",
    "like_escape": "concat(name, '_x') like '%!_x' escape '!'",
    "left_": "left(name, 2)",
    "left_neg": "left(name, -1)",
    "right_": "right(name, 3)",
    "right_neg": "right(name, -1)",
    "strpos_": "strpos(name, 'a')",
    "position_": "position('r' in name)",
    # dates and timestamps
    "year_ts": "extract(year from ts)",
    "quarter_d": "extract(quarter from d)",
    "quarter_ts": "extract(quarter from ts)",
    "month_ts": "extract(month from ts)",
    "day_d": "extract(day from d)",
    "hour_ts": "extract(hour from ts)",
    "minute_ts": "extract(minute from ts)",
    "second_ts": "extract(second from ts)",
    "dow_ts": "extract(dow from ts)",
    "isodow_d": "extract(isodow from d)",
    "doy_ts": "extract(doy from ts)",
    "week_d": "extract(week from d)",
    "week_ts": "date_part('week', ts)",
    "epoch_ts": "extract(epoch from ts)",
    "epoch_d": "date_part('epoch', d)",
    "year_d": "date_part('year', d)",
    "dow_d": "date_part('dow', d)",
    "second_dp": "date_part('second', ts)",
    "trunc_year": "date_trunc('year', ts)",
    "trunc_quarter": "date_trunc('quarter', ts)",
    "trunc_month": "date_trunc('month', ts)",
    "trunc_week": "date_trunc('week', ts)",
    "trunc_day": "date_trunc('day', ts)",
    "trunc_hour": "date_trunc('hour', ts)",
    "trunc_minute": "date_trunc('minute', ts)",
    "trunc_second": "date_trunc('second', ts)",
    "trunc_month_d": "date_trunc('month', d)",
    "trunc_week_d": "date_trunc('week', d)",
    "trunc_quarter_d": "date_trunc('quarter', d)",
    "diff_day": "date_diff('day', d, cast(ts as date))",
    "diff_day_ts": "date_diff('day', ts, cast(d as timestamp))",
    "diff_hour": "date_diff('hour', ts, d::timestamp)",
    "diff_minute": "date_diff('minute', cast(d as timestamp), ts)",
    "diff_second": "date_diff('second', ts, cast('1970-01-01 00:00:00.5' as timestamp))",
    "diff_month": "date_diff('month', d, cast(ts as date))",
    "diff_month_ts": "date_diff('month', ts, cast(d as timestamp))",
    "diff_year": "date_diff('year', ts, cast(d as timestamp))",
    "diff_year_d": "date_diff('year', d, cast('2000-02-29' as date))",
    "diff_hour_d": "date_diff('hour', d, cast('1970-01-01' as date))",
}

# DuckDB's type names as Arrow types (VARCHAR may also come out as large_string).
ARROW_TYPES = {
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "SMALLINT": pa.int16(),
    "TINYINT": pa.int8(),
    "BOOLEAN": pa.bool_(),
    "VARCHAR": pa.string(),
    "TIMESTAMP": pa.timestamp("us"),
    "DATE": pa.date32(),
}
DECIMAL_LITERAL = re.compile(r"(?<![\w.])(\d+\.\d+(?:[eE][+-]?\d+)?)(?![\w.])")


def as_duckdb(expr: str) -> str:
    """The expression for DuckDB: decimal literals, outside strings, as DOUBLE (as in Weir)."""
    parts = re.split(r"('(?:[^']|'')*')", expr)
    return "".join(p if p.startswith("'") else DECIMAL_LITERAL.sub(r"CAST(\1 AS DOUBLE)", p) for p in parts)


def derive_step(columns: dict) -> str:
    """A `derive` step; the columns as one inline TOML table (JSON strings are TOML strings)."""
    table = ", ".join(f"{name} = {json.dumps(expr, ensure_ascii=False)}" for name, expr in columns.items())
    return f'[[step]]\nop = "derive"\ncolumns = {{ {table} }}\n'


def job_text(src, out, steps: str) -> str:
    return f'name = "derive"\n\n[source]\nuri = "{src}"\n\n{steps}\n[sink]\nuri = "{out}"\nmode = "overwrite"\n'


def duckdb_select(src, columns) -> tuple:
    """`SELECT <columns> FROM read_parquet(src/*.parquet) ORDER BY id`: its Arrow table and
    its DuckDB type names. `columns` is [(name, expression)]."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    select = ", ".join(f'{as_duckdb(expr)} AS "{name}"' for name, expr in columns)
    rel = con.sql(f"SELECT {select} FROM read_parquet('{src}/*.parquet') ORDER BY id")
    types = [str(t) for t in rel.types]
    return rel.to_arrow_table(), types


def value_mismatches(got: pa.ChunkedArray, want: pa.ChunkedArray) -> np.ndarray:
    """Row positions where the values differ: nulls must match; doubles within rtol 1e-12
    (NaN equals NaN, infinities equal), everything else exactly."""
    got_null = got.is_null().to_numpy(zero_copy_only=False)
    want_null = want.is_null().to_numpy(zero_copy_only=False)
    bad = got_null != want_null
    both = ~got_null & ~want_null
    if pa.types.is_floating(want.type) and (pa.types.is_floating(got.type) or pa.types.is_integer(got.type)):
        g = got.cast(pa.float64()).to_numpy(zero_copy_only=False)
        w = want.cast(pa.float64()).to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            close = np.isclose(g, w, rtol=1e-12, atol=0.0, equal_nan=True)
        bad |= both & ~close
    else:
        if got.type != want.type:
            try:
                got = got.cast(want.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return np.flatnonzero(both | bad)
        g, w = got.to_pylist(), want.to_pylist()
        bad |= both & np.array([a != b for a, b in zip(g, w)], dtype=bool)
    return np.flatnonzero(bad)


def describe_rows(rows, got, want, inputs: pa.Table, limit=6) -> str:
    lines = []
    for row in rows[:limit]:
        source = {c: inputs.column(c)[int(row)].as_py() for c in inputs.column_names}
        lines.append(f"    input {source}: weir {got[int(row)].as_py()!r}, duckdb {want[int(row)].as_py()!r}")
    return "\n".join(lines)


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_derive_equals_duckdb(weir, tmp_path, dataset, shape):
    src, table = dataset
    out = tmp_path / "out"
    weir("run", write_job(tmp_path / "job.toml", job_text(src, out, derive_step(EXPRESSIONS))), *shape, check=0)
    got = read_output(out).sort_by("id")
    assert got.num_rows == table.num_rows

    # Replaced columns keep their place; new ones follow in the order written.
    inputs = table.column_names
    expected = [(c, EXPRESSIONS.get(c, c)) for c in inputs] + [(c, e) for c, e in EXPRESSIONS.items() if c not in inputs]
    want, duck_types = duckdb_select(src, expected)
    problems = []
    if got.column_names != [name for name, _ in expected]:
        problems.append(f"columns {got.column_names}, expected {[name for name, _ in expected]}")

    # Types: DuckDB's, mapped to Arrow (a decimal literal is a DOUBLE on both sides, see
    # `as_duckdb`); values: equal, doubles to rtol 1e-12.
    for (name, expr), duck_type in zip(expected, duck_types):
        if name not in got.column_names:
            problems.append(f"{name} = {expr!r}: missing from the output")
            continue
        want_type = ARROW_TYPES[duck_type]
        got_type = got.schema.field(name).type
        if not (got_type == want_type or (duck_type == "VARCHAR" and got_type == pa.large_string())):
            problems.append(f"{name} = {expr!r}: type {got_type}, DuckDB {duck_type} ({want_type})")
        rows = value_mismatches(got.column(name), want.column(name))
        if len(rows):
            problems.append(
                f"{name} = {expr!r}: {len(rows)} of {got.num_rows} rows differ from DuckDB\n"
                + describe_rows(rows, got.column(name), want.column(name), table)
            )
    assert not problems, f"{len(problems)} disagreements with DuckDB:\n" + "\n".join(problems)


def assert_nothing_committed(out):
    assert not (out / "_SUCCESS").exists() and not (out / "_weir" / "manifest.json").exists()
    assert not out.exists() or data_files(out) == [], "no part file is left behind"


def caret_column(stderr: str, expr: str):
    """The column of the `^` under the line that shows `expr`, relative to where `expr` starts
    (None without one)."""
    lines = stderr.splitlines()
    shown = [i for i, line in enumerate(lines[:-1]) if expr in line and "^" in lines[i + 1]]
    if not shown:
        return None
    line, caret = lines[shown[0]], lines[shown[0] + 1]
    return caret.index("^") - line.index(expr)


def test_errors_name_the_step_and_expression(weir, tmp_path, dataset):
    # (a), (b): integer overflow and integer division by zero, found while running; the
    # offending rows sit in one row group among many that are fine.
    rows = 1200
    ids = np.arange(rows, dtype=np.int64)
    big = ids.copy()
    big[700:705] = 2**62 + np.arange(5) * 7_919  # big * big and big + big overflow there only
    num = 987_654_321 + ids * 1_000
    den = (ids % 13) + 1
    den[777] = 0
    lowest = -ids
    lowest[901] = -(2**63)
    top = ids.copy()
    top[1000] = 2**63 - 1
    i32 = (ids % 1000).astype(np.int32)
    i32[1111] = 2**31 - 1
    columns = {"id": ids, "big": big, "num": num, "den": den, "minus_one": -np.ones(rows, np.int64), "lowest": lowest, "top": top}
    table = pa.table({**columns, "i32": pa.array(i32, pa.int32())})
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(table.slice(0, 600), src / "part-0.parquet", row_group_size=100)
    pq.write_table(table.slice(600), src / "part-1.parquet", row_group_size=100)
    cases = [
        ("big * big", [int(v) for v in big[700:705]]),
        ("big + big", [int(v) for v in big[700:705]]),
        ("num // den", [int(num[777])]),
        ("num % den", [int(num[777])]),
        ("-lowest", [-(2**63), 2**63]),
        ("abs(lowest)", [-(2**63), 2**63]),
        ("lowest // minus_one", [-(2**63), 2**63]),
        ("lowest % minus_one", [-(2**63), 2**63]),
        ("round(top, -1)", [2**63 - 1, 2**63 + 9]),
        ("i32 + 1", [2**31 - 1, 2**31]),
        ("i32 * 2", [2**31 - 1, 2**32 - 2]),
    ]
    problems = []  # every case is run, so that one that is not refused hides no other
    for index, (expr, secrets) in enumerate(cases):
        out = tmp_path / f"out{index}"
        steps = '[[step]]\nop = "filter"\nexpr = "id >= 0"\n\n' + derive_step({"ok": "id * 2", "x": expr})
        proc = weir("run", write_job(tmp_path / f"job{index}.toml", job_text(src, out, steps)), "-w", "2")
        err = proc.stderr
        if proc.returncode != 2 or "panicked" in err:
            problems.append(f"{expr}: exited {proc.returncode}, expected 2 (DuckDB refuses it)\n{err[-2000:]}")
            continue
        if not ("step 2 (derive)" in err and expr in err):
            problems.append(f"{expr}: the step or the expression is not named:\n{err}")
        problems += [f"{expr}: the value {secret} is in the message:\n{err}" for secret in secrets if str(secret) in err]
        assert_nothing_committed(out)

    # (c): bad expressions are refused before any data is read, with a caret at the culprit.
    src, _ = dataset
    refused = [
        ("n + amout * 2", "amout"),  # an unknown column: the message suggests the columns
        ("1 + frobnicate(n)", "frobnicate"),  # an unknown function
        ("n * 2 + (name + 1)", None),  # a type mismatch: the caret within `name + 1`
        ("n >= and k > 0", "and"),  # a syntax error
    ]
    for index, (expr, culprit) in enumerate(refused):
        out = tmp_path / f"bad{index}"
        job = write_job(tmp_path / f"bad{index}.toml", job_text(src, out, derive_step({"x": expr})))
        proc = weir("validate", job)
        err = proc.stderr
        if proc.returncode != 2 or "panicked" in err:
            problems.append(f"validate {expr}: exited {proc.returncode}, expected 2\n{err[-2000:]}")
            continue
        if "step 1 (derive)" not in err:
            problems.append(f"validate {expr}: the step is not named:\n{err}")
        column = caret_column(err, expr)
        if column is None:
            problems.append(f"validate {expr}: no caret under the expression:\n{err}")
        elif culprit is not None and column != expr.index(culprit):
            problems.append(f"validate {expr}: the caret is not under {culprit!r}:\n{err}")
        elif culprit is None and not expr.index("name") <= column <= expr.index("1)"):
            problems.append(f"validate {expr}: the caret is not within 'name + 1':\n{err}")
        if culprit == "amout" and "amount" not in err:
            problems.append(f"validate {expr}: the columns are not suggested:\n{err}")
        if culprit == "frobnicate" and "frobnicate" not in err.replace(expr, ""):
            problems.append(f"validate {expr}: the function is not named:\n{err}")
        if out.exists():
            problems.append(f"validate {expr}: wrote {out}")
    assert not problems, "\n".join(problems)


def test_derive_then_filter_and_standardize(weir, tmp_path, dataset):
    src, table = dataset
    out = tmp_path / "out"
    steps = (
        derive_step({"ratio": "n / k", "tag": "coalesce(trim(name), '?')"})
        + '\n[[step]]\nop = "filter"\nexpr = "ratio is not null and tag != \'\'"\n'
        + '\n[[step]]\nop = "standardize"\ncolumns = ["ratio"]\n'
    )
    weir("run", write_job(tmp_path / "job.toml", job_text(src, out, steps)), "-p", "2", "-w", "2", check=0)
    got = read_output(out).sort_by("id")

    con = duckdb.connect()
    want = con.sql(
        "SELECT id, ratio, tag FROM (SELECT id, n / k AS ratio, coalesce(trim(name), '?') AS tag "
        f"FROM read_parquet('{src}/*.parquet')) WHERE ratio IS NOT NULL AND tag != '' ORDER BY id"
    ).to_arrow_table()
    assert 0 < want.num_rows < table.num_rows
    assert got.column("id").to_pylist() == want.column("id").to_pylist()
    assert got.column_names == table.column_names + ["ratio", "tag"]
    assert got.column("tag").to_pylist() == want.column("tag").to_pylist()
    assert got.schema.field("ratio").type == pa.float64()
    ratio = want.column("ratio").to_numpy().reshape(-1, 1)
    scaled = StandardScaler().fit_transform(ratio)[:, 0]
    np.testing.assert_allclose(got.column("ratio").to_numpy(), scaled, rtol=1e-9, atol=1e-12)
    kept = table.filter(pc.is_in(table.column("id"), want.column("id")))
    for name in table.column_names:  # the input columns pass through unchanged (NaN equal to NaN)
        assert len(value_mismatches(got.column(name), kept.column(name))) == 0, name


def test_zoned_timestamps_across_clock_changes_equal_duckdb(weir, tmp_path):
    """A Europe/Berlin timestamp column every 10 minutes across both 2024 clock changes (the
    hour skipped in March, the hour repeated in October): each date function equals DuckDB's
    with its session TimeZone set to the column's zone (DuckDB reads a zoned timestamp in the
    session's zone, Weir in the column's)."""
    minutes = 10 * 60 * US
    spring = np.arange(1_711_836_000 * US, 1_711_855_800 * US, minutes)  # 2024-03-30 22:00 to 03-31 03:30 UTC
    autumn = np.arange(1_729_983_600 * US, 1_730_001_600 * US, minutes)  # 2024-10-26 23:00 to 10-27 04:00 UTC
    micros = np.concatenate([spring, autumn])
    table = pa.table(
        {
            "id": pa.array(np.arange(len(micros)), pa.int64()),
            "ts": pa.array(micros, pa.timestamp("us", tz="Europe/Berlin")),
        }
    )
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(table, src / "part-0.parquet", row_group_size=20)
    columns = {
        "hour": "extract(hour from ts)",
        "day": "extract(day from ts)",
        "epoch": "extract(epoch from ts)",
        "trunc_minute": "date_trunc('minute', ts)",
        "trunc_hour": "date_trunc('hour', ts)",
        "trunc_day": "date_trunc('day', ts)",
        "trunc_week": "date_trunc('week', ts)",
        "trunc_month": "date_trunc('month', ts)",
        "diff_hour": "date_diff('hour', cast('2024-03-30 23:00:00' as timestamp), cast(ts as timestamp))",
        "wall_date": "cast(ts as date)",
        "diff_hour_zoned": "date_diff('hour', ts, '2024-10-27 03:00:00')",
        "diff_minute_zoned": "date_diff('minute', '2024-03-31 01:55:00', ts)",
        "diff_day_zoned": "date_diff('day', '2024-03-30 12:00:00', ts)",
        "text": "cast(ts as varchar)",
        "after": "ts >= '2024-03-31 03:00:00'",
        "autumn_after": "ts > '2024-10-27 02:30:00'",
    }
    out = tmp_path / "out"
    weir("run", write_job(tmp_path / "job.toml", job_text(src, out, derive_step(columns))), check=0)
    got = read_output(out).sort_by("id")
    con = duckdb.connect()
    con.execute("SET TimeZone='Europe/Berlin'")
    select = ", ".join(f'{expr} AS "{name}"' for name, expr in columns.items())
    want = con.sql(f"SELECT {select} FROM read_parquet('{src}/*.parquet') ORDER BY id").to_arrow_table()
    problems = []
    for name in columns:
        g, w = got.column(name), want.column(name)
        if pa.types.is_timestamp(w.type):  # compare instants
            g, w = g.cast(pa.int64()), w.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        rows = value_mismatches(g, w)
        if len(rows):
            problems.append(f"{name} = {columns[name]!r}: {len(rows)} rows differ\n" + describe_rows(rows, g, w, table))
    assert not problems, "\n".join(problems)
