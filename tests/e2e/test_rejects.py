"""`sink.rejects`: the rows a `cast` (`on_error = "reject"`) or a `check` (`on_fail =
"reject"`) step refuses go to a second output prefix, committed together with the main one.

Every expected row, count and reason is computed here with pandas from the input (the
values' text, the step that rejects each row, the expectations each row breaks), never
taken from Weir's own output. Outputs are read with pyarrow: the directory (what a reader
that skips `_` paths sees) or the part files of one run (`part-*-<run_id>.parquet`).

- The rows of both outputs, the rejects' schema and columns, the reasons, the manifests'
  `rejects` and `checks`, at one worker and two processes of two workers.
- A run that rejects nothing still commits an empty rejects output with the schema.
- `sink.mode` applies to the rejects prefix: overwrite, append, error_if_exists.
- What `weir validate` refuses (overlaps, a missing or needless `sink.rejects`, `unique` and
  `row_count` rejecting, a `mask` after a rejecting step, encryption, another store).
- SIGKILL at each failpoint of the double commit (`rejects-prepared`, `commit-decided`,
  `main-published`): both outputs of the killed run become visible, or neither; a run on the
  rejects prefix alone also completes a decided commit; the same on Garage (S3).
"""

import base64
import json
import math
import os
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import data_files, write_dataset, write_job
from helpers import (
    SHAPES_1_AND_2X2,
    Run,
    S3Prefix,
    attempt_files,
    committed_run_id,
    ls_json,
    manifest,
    read_dir,
    run_retrying,
    shape_id,
    wait_no_processes,
)

ACCEPTED = ["new", "paid", "shipped"]
# Texts an int64 cast must refuse (no spaces: `cast` does not trim).
BAD_AGES = ["x7", "7x", "abc", "n/a", "1e3x", "--3"]
INT_TEXT = re.compile(r"-?[0-9]+")
DATA_COLUMNS = ["id", "age_text", "status", "amount"]
REJECTS_SCHEMA = [(name, pa.string()) for name in DATA_COLUMNS] + [
    ("_reject_step", pa.int32()),
    ("_reject_op", pa.string()),
    ("_reject_reason", pa.string()),
]
CHECK_STEP = 3  # the check is the job's third step (after the cast and the filter)
SKIPS = (3, 5, 6)  # the filters of consecutive runs (`id % 7 <> SKIP`), so their outputs differ


# ---------------------------------------------------------------------------------------
# The job


def steps(skip: int, cast_on_error="reject", check_on_fail="reject", check_extra="") -> str:
    """Step 1 casts `age_text` to int64, step 2 drops the ids with `id % 7 = skip`, step 3
    checks the status and the amount."""
    return f"""
[[step]]
op = "cast"
columns = {{ age_text = "int64" }}
on_error = "{cast_on_error}"

[[step]]
op = "filter"
expr = "id % 7 <> {skip}"

[[step]]
op = "check"
name = "orders are sane"
on_fail = "{check_on_fail}"
not_null = ["status"]
accepted_values = {{ status = {json.dumps(ACCEPTED)} }}
range = {{ amount = {{ min = 0, max = 100 }} }}
expression = "amount >= 1 or age_text > 5"
{check_extra}
"""


def job_text(src, out, rejects, skip=SKIPS[0], mode="overwrite", ttl=None, step_text=None, sink_extra="", tail="") -> str:
    """A job reading `src` into `out`, its rejects into `rejects` (left out when None)."""
    sink = f'[sink]\nuri = "{out}"\nmode = "{mode}"\n'
    if rejects is not None:
        sink += f'rejects = "{rejects}"\n'
    if ttl is not None:
        sink += f"lease_ttl_s = {ttl}\n"
    body = steps(skip) if step_text is None else step_text
    return f'name = "orders-rejects"\n\n[source]\nuri = "{src}"\nbatch_size = 700\n{body}\n{sink}{sink_extra}{tail}'


def job_file(path: Path, *args, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_job(path, job_text(*args, **kwargs))


# ---------------------------------------------------------------------------------------
# The data and its pandas reference


class Expected:
    """What a run of `steps(skip)` must write, computed with pandas.

    `main`: the rows of the main output (dicts of id, age_text as an int or None, status,
    amount, amount_null), by id. `rejects`: the rejected rows by id as text, each a dict of
    the columns' text (amount kept as a float, with amount_null), `step`, `op`, and `broken`
    (the sorted expectation names a check row breaks). `checks`: (expectation, columns) ->
    failing rows; `check_rows`: the rows reaching the check."""

    def __init__(self, frame: pd.DataFrame, skip: int):
        castable = frame["age_text"].map(lambda v: v is None or INT_TEXT.fullmatch(v) is not None)
        cast_rejects = frame[~castable]
        seen = frame[castable].copy()
        # Python ints or None (pandas would turn a column of ints and nulls into floats).
        seen["age"] = pd.Series([None if v is None else int(v) for v in seen["age_text"]], index=seen.index, dtype=object)
        seen = seen[seen["id"] % 7 != skip]
        amount, amount_null = seen["amount"], seen["amount_null"]
        age_at_most_5 = seen["age"].map(lambda a: a is not None and a <= 5)
        broken = {
            "not_null": seen["status"].isna(),
            # Nulls pass accepted_values and range; NaN breaks range.
            "accepted_values": seen["status"].notna() & ~seen["status"].isin(ACCEPTED),
            "range": ~amount_null & (np.isnan(amount) | (amount < 0) | (amount > 100)),
            # `amount >= 1 or age_text > 5` in Kleene logic, NaN above every number: false
            # only for a number below 1 with a known age of at most 5; a null result passes.
            "expression": ~amount_null & ~np.isnan(amount) & (amount < 1) & age_at_most_5,
        }
        rejected = np.logical_or.reduce([mask.to_numpy() for mask in broken.values()])
        self.check_rows = len(seen)
        self.checks = {
            ("not_null", "status"): int(broken["not_null"].sum()),
            ("accepted_values", "status"): int(broken["accepted_values"].sum()),
            ("range", "amount"): int(broken["range"].sum()),
            ("expression", ""): int(broken["expression"].sum()),
        }
        kept = seen[~rejected]
        self.main = [
            {"id": int(r.id), "age_text": r.age, "status": r.status, "amount": r.amount, "amount_null": bool(r.amount_null)}
            for r in kept.sort_values("id").itertuples()
        ]
        rows = []
        for r in cast_rejects.itertuples():
            rows.append(self._reject(r, r.age_text, 1, "cast", None))
        check_rejects = seen[rejected]
        names = {name: mask[rejected].to_numpy() for name, mask in broken.items()}
        for i, r in enumerate(check_rejects.itertuples()):
            which = sorted(name for name in broken if names[name][i])
            rows.append(self._reject(r, None if r.age is None else str(r.age), CHECK_STEP, "check", which))
        self.rejects = sorted(rows, key=lambda row: row["id"])

    @staticmethod
    def _reject(r, age_text, step, op, broken):
        return {
            "id": str(int(r.id)),
            "age_text": age_text,
            "status": r.status,
            "amount": r.amount,
            "amount_null": bool(r.amount_null),
            "step": step,
            "op": op,
            "broken": broken,
        }


class Orders:
    """The input folder and the same rows as a pandas frame (`amount_null` keeps Arrow's
    distinction between a null and a NaN amount)."""

    def __init__(self, path: Path, frame: pd.DataFrame):
        self.path, self.frame = path, frame
        self._expected = {}

    def expected(self, skip: int) -> Expected:
        if skip not in self._expected:
            self._expected[skip] = Expected(self.frame, skip)
        return self._expected[skip]


def make_orders(rng: np.random.Generator, rows: int):
    """Unique ids; ages as text (mostly digits, some garbage, some nulls); statuses (accepted,
    others, nulls); amounts (negative, above 100, NaN, null)."""
    ids = rng.permutation(rows).astype(np.int64) * 3 + 10
    ages = rng.integers(0, 100, rows)
    kind = rng.random(rows)
    age_text = np.array([str(a) for a in ages], dtype=object)
    bad = kind < 0.05
    age_text[bad] = [str(v) for v in rng.choice(BAD_AGES, int(bad.sum()))]
    age_text[(kind >= 0.05) & (kind < 0.09)] = None
    status = np.array([str(v) for v in rng.choice(ACCEPTED + ["lost", "??"], rows, p=[0.3, 0.3, 0.33, 0.04, 0.03])], dtype=object)
    status[rng.random(rows) < 0.03] = None
    amount = rng.normal(50, 30, rows)
    small = rng.random(rows) < 0.05  # in [0, 1): only the expression may break
    amount[small] = rng.random(int(small.sum()))
    amount[rng.random(rows) < 0.02] = np.nan
    amount_null = rng.random(rows) < 0.03
    table = pa.table(
        {
            "id": pa.array(ids, type=pa.int64()),
            "age_text": pa.array(list(age_text), type=pa.string()),
            "status": pa.array(list(status), type=pa.string()),
            "amount": pa.array(amount, mask=amount_null, type=pa.float64()),
        }
    )
    frame = pd.DataFrame({"id": ids, "age_text": age_text, "status": status, "amount": amount, "amount_null": amount_null})
    return table, frame


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    """About 8,000 rows in three files of several row groups each, plus an empty file."""
    table, frame = make_orders(np.random.default_rng(20261207), 8_000)
    src = write_dataset(table, tmp_path_factory.mktemp("rejects") / "src", row_group=500)
    return Orders(src, frame)


# ---------------------------------------------------------------------------------------
# Checks of what Weir wrote


def same_float(got, value: float, is_null: bool) -> bool:
    if is_null:
        return got is None
    if got is None:
        return False
    return math.isnan(got) if math.isnan(value) else got == value


def amount_text_matches(text, value: float, is_null: bool) -> bool:
    """The text of a float64 amount: null stays null; otherwise it reads back as the value."""
    if is_null or text is None:
        return is_null and text is None
    try:
        parsed = float(text)
    except ValueError:
        return False
    return same_float(parsed, value, False)


def assert_main(table: pa.Table, want: list, what: str):
    assert table is not None, f"{what}: nothing was read"
    assert table.column_names == DATA_COLUMNS, f"{what}: columns {table.column_names}"
    assert table.schema.field("age_text").type == pa.int64(), f"{what}: {table.schema}"
    got = sorted(table.to_pylist(), key=lambda row: row["id"])
    assert [row["id"] for row in got] == [row["id"] for row in want], f"{what}: {len(got)} rows, expected {len(want)}, or other ids"
    wrong = [
        (g, w)
        for g, w in zip(got, want)
        if g["age_text"] != w["age_text"] or g["status"] != w["status"] or not same_float(g["amount"], w["amount"], w["amount_null"])
    ]
    assert not wrong, f"{what}: {len(wrong)} rows differ, e.g. {wrong[:3]}"


def assert_rejects(table: pa.Table, want: list, what: str):
    """The rejects' schema, their rows by id, and each row's step, op, values and reason."""
    assert table is not None, f"{what}: nothing was read"
    assert [(f.name, f.type) for f in table.schema] == REJECTS_SCHEMA, f"{what}: {table.schema}"
    for name in DATA_COLUMNS:
        assert table.schema.field(name).nullable, f"{what}: {name} is not nullable"
    got = sorted(table.to_pylist(), key=lambda row: row["id"] or "")
    assert [row["id"] for row in got] == [row["id"] for row in want], f"{what}: {len(got)} rows, expected {len(want)}, or other ids"
    wrong = []
    for g, w in zip(got, want):
        reason = g["_reject_reason"] or ""
        if w["op"] == "cast":
            reason_ok = "age_text" in reason
        else:
            reason_ok = sorted(part.split(":", 1)[0].strip() for part in reason.split("; ")) == w["broken"]
        if (
            g["_reject_step"] != w["step"]
            or g["_reject_op"] != w["op"]
            or g["age_text"] != w["age_text"]
            or g["status"] != w["status"]
            or not amount_text_matches(g["amount"], w["amount"], w["amount_null"])
            or not reason_ok
        ):
            wrong.append((g, w))
    assert not wrong, f"{what}: {len(wrong)} rows differ, e.g. {wrong[:3]}"


def run_parts(prefix: Path, run_id: str) -> list:
    return sorted(p for p in prefix.glob("part-*.parquet") if p.name.endswith(f"-{run_id}.parquet"))


def read_run(prefix: Path, run_id: str):
    """The rows of the part files one run published into `prefix`."""
    parts = run_parts(prefix, run_id)
    return pa.concat_tables([pq.read_table(p) for p in parts]) if parts else None


def files_of(prefix: Path) -> dict:
    """Every file under `prefix` with its bytes (empty when the prefix does not exist)."""
    if not prefix.exists():
        return {}
    return {str(p.relative_to(prefix)): p.read_bytes() for p in prefix.rglob("*") if p.is_file()}


def attempt_dirs(prefix: Path, run_id: str) -> list:
    runs = prefix / "_weir" / "runs"
    return sorted(p.name for p in runs.glob(f"{run_id}.*")) if runs.exists() else []


def assert_output_layout(prefix: Path, what: str):
    """A committed output: `_SUCCESS`, a manifest whose files are exactly the visible part
    files, and whose `rows` is what pyarrow reads from them."""
    found = manifest(prefix)
    assert found is not None and (prefix / "_SUCCESS").exists(), f"{what}: not committed: {sorted(files_of(prefix))}"
    visible = sorted(str(p.relative_to(prefix)) for p in data_files(prefix))
    assert visible == sorted(f["path"] for f in found["files"]), f"{what}: visible {visible}, manifest {found['files']}"
    assert all(re.fullmatch(r"part-[^/]*\.parquet", name) for name in visible), f"{what}: {visible}"
    assert found["rows"] == sum(pq.read_metadata(prefix / name).num_rows for name in visible), f"{what}: rows {found['rows']}"


def assert_runs(out: Path, rejects: Path, data: Orders, runs: dict, what: str, rejects_only=None):
    """Both prefixes hold exactly the part files of `runs` (run id -> skip), each run's with
    the rows pandas computes for it; the rejects prefix also those of `rejects_only` (run id
    -> the rejects rows expected)."""
    rejects_only = rejects_only or {}
    for prefix, run_ids in ((out, list(runs)), (rejects, list(runs) + list(rejects_only))):
        assert_output_layout(prefix, f"{what} {prefix.name}")
        names = [p.name for p in data_files(prefix)]
        strays = [n for n in names if not any(n.endswith(f"-{run_id}.parquet") for run_id in run_ids)]
        assert not strays, f"{what}: {prefix.name} holds part files of other runs: {strays}"
    for run_id, skip in runs.items():
        assert_main(read_run(out, run_id), data.expected(skip).main, f"{what}: main rows of {run_id}")
        assert_rejects(read_run(rejects, run_id), data.expected(skip).rejects, f"{what}: rejects of {run_id}")
    for run_id, want in rejects_only.items():
        assert_rejects(read_run(rejects, run_id), want, f"{what}: rejects of {run_id}")


# ---------------------------------------------------------------------------------------
# The rows of both outputs


@pytest.mark.parametrize("shape", SHAPES_1_AND_2X2, ids=shape_id)
def test_rejects_hold_exactly_the_rows_cast_and_check_reject(weir, tmp_path, orders, shape):
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    job = job_file(tmp_path / "job.toml", orders.path, out, rejects)
    weir("run", job, *shape, check=0)
    want = orders.expected(SKIPS[0])
    assert want.rejects and any(r["op"] == "cast" for r in want.rejects) and all(want.checks.values()), "the data must break every rule"

    assert_main(read_dir(out), want.main, "main output")
    assert_rejects(read_dir(rejects), want.rejects, "rejects output")
    assert_output_layout(out, "main")
    assert_output_layout(rejects, "rejects")

    found = manifest(out)
    assert found["rows"] == len(want.main)
    assert found["rejects"]["rows"] == len(want.rejects), found.get("rejects")
    assert str(rejects) in found["rejects"]["uri"], found["rejects"]
    assert manifest(rejects)["rows"] == len(want.rejects)
    got = {(c["expectation"], ",".join(c.get("columns", []))): c.get("failing_rows") for c in found["checks"]}
    assert got == want.checks
    for check in found["checks"]:
        assert check["step"] == CHECK_STEP and check["on_fail"] == "reject" and check["rows"] == want.check_rows, check


def test_a_run_that_rejects_nothing_commits_an_empty_rejects_output(weir, tmp_path, orders):
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    check = '[[step]]\nop = "check"\non_fail = "reject"\nnot_null = ["id"]\nrange = { id = { min = 0 } }\n'
    job = job_file(tmp_path / "job.toml", orders.path, out, rejects, step_text=check)
    weir("run", job, "-w", "2", check=0)
    assert len(read_dir(out)) == len(orders.frame)
    assert sorted(read_dir(out)["id"].to_pylist()) == sorted(orders.frame["id"].tolist())
    assert_output_layout(rejects, "rejects")
    parts = data_files(rejects)
    assert len(parts) == 1, parts
    empty = pq.read_table(parts[0])
    assert empty.num_rows == 0 and [(f.name, f.type) for f in empty.schema] == REJECTS_SCHEMA, empty.schema
    assert manifest(rejects)["rows"] == 0 and manifest(out)["rejects"]["rows"] == 0


# ---------------------------------------------------------------------------------------
# sink.mode


def test_rejects_follow_the_sink_mode(weir, tmp_path, orders):
    first, second = SKIPS[0], SKIPS[1]

    def run(folder, skip, mode, run_id, out=None, rejects=None, check=0):
        out, rejects = out or tmp_path / folder / "out", rejects or tmp_path / folder / "rejects"
        job = job_file(tmp_path / f"{folder}-{run_id}.toml", orders.path, out, rejects, skip=skip, mode=mode)
        return out, rejects, weir("run", job, "-w", "2", "--var", f"run_id={run_id}", check=check)

    # overwrite: the second run's rejects replace the first's.
    run("ow", first, "overwrite", "ow1")
    out, rejects, _ = run("ow", second, "overwrite", "ow2")
    assert committed_run_id(out) == "ow2" and committed_run_id(rejects) == "ow2"
    assert_runs(out, rejects, orders, {"ow2": second}, "overwrite")
    assert_rejects(read_dir(rejects), orders.expected(second).rejects, "overwrite: the rejects a reader sees")

    # append: both runs' rejects, each in its own part files.
    run("ap", first, "append", "apA")
    out, rejects, _ = run("ap", second, "append", "apB")
    assert_runs(out, rejects, orders, {"apA": first, "apB": second}, "append")
    assert manifest(rejects)["rows"] == len(orders.expected(first).rejects) + len(orders.expected(second).rejects)
    assert read_dir(rejects).num_rows == manifest(rejects)["rows"]

    # error_if_exists: a non-empty rejects prefix refuses the run, even into an empty main
    # prefix; a non-empty main prefix refuses it, even with an empty rejects prefix.
    out1, rejects1, _ = run("ee", first, "error_if_exists", "ee1", out=tmp_path / "ee" / "out1", rejects=tmp_path / "ee" / "rejects1")
    assert_runs(out1, rejects1, orders, {"ee1": first}, "error_if_exists into empty prefixes")
    for out, rejects, run_id in [
        (tmp_path / "ee" / "out2", rejects1, "ee2"),
        (out1, tmp_path / "ee" / "rejects2", "ee3"),
    ]:
        before = {p: files_of(p) for p in (out, rejects)}
        *_, proc = run("ee", second, "error_if_exists", run_id, out=out, rejects=rejects, check=None)
        assert proc.returncode != 0, f"error_if_exists into {out} / {rejects} was not refused:\n{proc.stderr}"
        assert "panicked" not in proc.stderr, proc.stderr
        for prefix, files in before.items():
            assert files_of(prefix) == files, f"the refused run {run_id} changed {prefix}: {sorted(files)} -> {sorted(files_of(prefix))}"


# ---------------------------------------------------------------------------------------
# What weir validate refuses


MASK_STATUS = '\n[[step]]\nop = "mask"\ncolumns = ["status"]\nmethod = "redact"\nreplacement = "<gone>"\n'
CAST_ONLY = '\n[[step]]\nop = "cast"\ncolumns = { age_text = "int64" }\non_error = "reject"\n'
CHECK_ONLY = f'\n[[step]]\nop = "check"\non_fail = "reject"\nnot_null = ["status"]\naccepted_values = {{ status = {json.dumps(ACCEPTED)} }}\n'
ENCRYPTION = '[sink.encryption]\nfooter_key = "footer"\ncolumn_keys = { pii = ["status"] }\n'


def refused_job(case: str, src: Path, root: Path) -> tuple:
    """The job text of a refusal case, and the words its message must hold."""
    out, rejects = root / "out", root / "rejects"
    if case == "rejects-is-the-sink":
        return job_text(src, out, out), "sink.rejects"
    if case == "rejects-inside-the-sink":
        return job_text(src, out, out / "rejects"), "sink.rejects"
    if case == "sink-inside-the-rejects":
        return job_text(src, root / "all" / "out", root / "all"), "sink.rejects"
    if case == "rejects-is-the-source":
        return job_text(src, out, src), "sink.rejects"
    if case == "rejects-inside-the-source":
        return job_text(src, out, src / "rejects"), "sink.rejects"
    if case == "cast-rejects-without-sink-rejects":
        return job_text(src, out, None, step_text=CAST_ONLY), "sink.rejects"
    if case == "check-rejects-without-sink-rejects":
        return job_text(src, out, None, step_text=CHECK_ONLY), "sink.rejects"
    if case == "sink-rejects-without-a-rejecting-step":
        return job_text(src, out, rejects, step_text=steps(3, cast_on_error="null", check_on_fail="warn")), "sink.rejects"
    if case == "unique-rejects":
        return job_text(src, out, rejects, step_text=steps(3, check_extra='unique = ["id"]')), "reject"
    if case == "row-count-rejects":
        return job_text(src, out, rejects, step_text=steps(3, check_extra="row_count = { min = 1 }")), "reject"
    if case == "mask-after-a-rejecting-step":
        return job_text(src, out, rejects, step_text=steps(3) + MASK_STATUS), "mask"
    if case == "encryption":
        return job_text(src, out, rejects, tail=ENCRYPTION), "rejects"
    raise ValueError(case)


REFUSALS = [
    "rejects-is-the-sink",
    "rejects-inside-the-sink",
    "sink-inside-the-rejects",
    "rejects-is-the-source",
    "rejects-inside-the-source",
    "cast-rejects-without-sink-rejects",
    "check-rejects-without-sink-rejects",
    "sink-rejects-without-a-rejecting-step",
    "unique-rejects",
    "row-count-rejects",
    "mask-after-a-rejecting-step",
    "encryption",
]


@pytest.mark.parametrize("case", REFUSALS)
def test_what_a_rejects_output_refuses(weir, tmp_path, case):
    # A small source of its own: no case may touch the data other tests read.
    table, _ = make_orders(np.random.default_rng(5), 300)
    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(table, src / "part-0.parquet", row_group_size=100)
    keys = {"WEIR_KEY_FOOTER": base64.b64encode(os.urandom(16)).decode(), "WEIR_KEY_PII": base64.b64encode(os.urandom(16)).decode()}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WEIR_KEY_")}, **keys}
    before = files_of(src)

    # The job this case changes is valid.
    valid = write_job(tmp_path / "valid.toml", job_text(src, tmp_path / "out", tmp_path / "rejects"))
    weir("validate", valid, env=env, check=0)

    text, words = refused_job(case, src, tmp_path)
    job = write_job(tmp_path / "job.toml", text)
    proc = weir("validate", job, env=env)
    assert proc.returncode != 0, f"{case}: weir validate accepted\n{text}\n{proc.stdout}"
    assert "panicked" not in proc.stderr, proc.stderr
    assert words in proc.stderr, f"{case}: {words!r} not in the message:\n{proc.stderr}"
    if case == "rejects-is-the-sink":
        # `weir run` refuses it too, before writing anything.
        proc = weir("run", job, "-w", "2", env=env)
        assert proc.returncode != 0 and words in proc.stderr, proc.stderr
        assert not (tmp_path / "out").exists() or data_files(tmp_path / "out") == []
        assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert files_of(src) == before, "the source changed"


# ---------------------------------------------------------------------------------------
# Kills between the two decisions (local disk)


def reached(moment: str, out: Path, rejects: Path, run_id: str) -> bool:
    """Whether the killed run's outputs show that it reached `moment` (a failpoint holds it
    there for 3 s)."""
    if moment == "rejects-prepared":
        return "commit.json" in attempt_files(rejects, run_id)
    if moment == "commit-decided":
        return "commit.json" in attempt_files(out, run_id)
    if moment == "main-published":
        return committed_run_id(out) == run_id
    raise ValueError(moment)


def kill_at(job: Path, moment: str, out: Path, rejects: Path, run_id: str, env=None, probe=None) -> str:
    """Runs the job (`-w 2`) held at `moment` by its failpoint, SIGKILLs it there; returns a
    description of the run for messages."""
    env = {**(env or os.environ), "FAILPOINTS": f"{moment}=sleep(3000)"}
    probe = probe or (lambda: reached(moment, out, rejects, run_id))
    run = Run(job, "-w", "2", "--var", f"run_id={run_id}", env=env)
    try:
        deadline = time.time() + 120
        while run.proc.poll() is None and not probe() and time.time() < deadline:
            time.sleep(0.002)
        assert run.proc.poll() is None and probe(), f"the run never stopped at {moment}: " + run.describe()
        os.kill(run.pid, signal.SIGKILL)
        rc = run.wait(timeout=60)
        assert wait_no_processes(str(job), 10) == []
    finally:
        run.kill()
    assert rc == -signal.SIGKILL, run.describe()
    return f"{run_id} killed at {moment}:\n{run.stderr}"


MOMENTS = ["rejects-prepared", "commit-decided", "main-published"]


@pytest.mark.parametrize("moment", MOMENTS)
def test_a_kill_between_the_two_decisions_commits_both_or_neither(weir, tmp_path, orders, moment):
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    prev, killed, after = SKIPS
    job = lambda name, skip, **kw: job_file(tmp_path / f"{name}.toml", orders.path, out, rejects, skip=skip, mode="append", **kw)  # noqa: E731
    weir("run", job("prev", prev), "-w", "2", "--var", "run_id=prev", check=0)
    assert_runs(out, rejects, orders, {"prev": prev}, "the previous run")

    state = kill_at(job("killed", killed, ttl=2), moment, out, rejects, "killed")
    context = f"{state}\nmain: {sorted(files_of(out))}\nrejects: {sorted(files_of(rejects))}"
    if moment == "rejects-prepared":
        # Nothing is committed: the main decision was never written, and readers see the
        # previous outputs, both.
        assert "commit.json" not in attempt_files(out, "killed"), context
        assert committed_run_id(out) == "prev" and committed_run_id(rejects) == "prev", context
        assert_main(read_dir(out), orders.expected(prev).main, "main after the kill: " + context)
        assert_rejects(read_dir(rejects), orders.expected(prev).rejects, "rejects after the kill: " + context)
        # `weir ls` tells the conditional decision left behind for what it is: no commit.
        status = ls_json(weir, str(rejects))
        # (`in_progress` until the killed run's lease expires.)
        assert status["run_id"] == "prev" and status.get("interrupted_commit") is None, f"{status}\n{context}"
    elif moment == "commit-decided":
        assert committed_run_id(out) == "prev" and committed_run_id(rejects) == "prev", "published before the failpoint: " + context
        for prefix in (out, rejects):
            status = ls_json(weir, str(prefix))
            assert status.get("interrupted_commit", "").startswith("killed."), f"{prefix}: {status}\n{context}"
    else:
        assert committed_run_id(out) == "killed" and committed_run_id(rejects) == "prev", "the rejects were published first: " + context

    proc = run_retrying(weir, "run", job("after", after), "-w", "2", "--var", "run_id=after", timeout=20)
    assert proc.returncode == 0, proc.stderr + "\n" + context
    assert committed_run_id(out) == "after" and committed_run_id(rejects) == "after", context
    for prefix in (out, rejects):
        assert attempt_dirs(prefix, "killed") == [], f"the killed run's attempt is left in {prefix}: {context}"
    if moment == "rejects-prepared":
        for prefix in (out, rejects):
            assert run_parts(prefix, "killed") == [], f"the killed run's files were published in {prefix}: {context}"
        assert_runs(out, rejects, orders, {"prev": prev, "after": after}, context)
    else:
        assert_runs(out, rejects, orders, {"prev": prev, "killed": killed, "after": after}, context)


def test_the_rejects_prefix_alone_resolves_a_decided_commit(weir, tmp_path, orders):
    """Killed at `commit-decided`, the run is committed: the next run on the rejects prefix
    (another job, no rejects of its own) publishes the killed run's rejects before appending
    its own; the next run on the main prefix then completes the main output and leaves that
    later commit of the rejects prefix in place."""
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    prev, killed, after = SKIPS
    job = lambda name, skip, **kw: job_file(tmp_path / f"{name}.toml", orders.path, out, rejects, skip=skip, mode="append", **kw)  # noqa: E731
    weir("run", job("prev", prev), "-w", "2", "--var", "run_id=prev", check=0)
    state = kill_at(job("killed", killed, ttl=2), "commit-decided", out, rejects, "killed")
    context = f"{state}\nmain: {sorted(files_of(out))}\nrejects: {sorted(files_of(rejects))}"
    assert committed_run_id(rejects) == "prev", context

    # The other job copies the previous run's rejects files: the rejects schema, so that
    # it may append to the rejects prefix.
    copied = tmp_path / "copied"
    copied.mkdir()
    for part in run_parts(rejects, "prev"):
        shutil.copy(part, copied / part.name)
    other = write_job(tmp_path / "other.toml", f'name = "other"\n[source]\nuri = "{copied}"\n[sink]\nuri = "{rejects}"\nmode = "append"\n')
    proc = run_retrying(weir, "run", other, "-w", "2", "--var", "run_id=other", timeout=20)
    assert proc.returncode == 0, proc.stderr + "\n" + context
    assert committed_run_id(rejects) == "other", context
    assert attempt_dirs(rejects, "killed") == [], context
    assert_output_layout(rejects, "rejects after the other job")
    assert_rejects(read_run(rejects, "killed"), orders.expected(killed).rejects, "the killed run's rejects: " + context)
    assert_rejects(read_run(rejects, "prev"), orders.expected(prev).rejects, "the previous rejects")
    assert_rejects(read_run(rejects, "other"), orders.expected(prev).rejects, "the other job's rows (a copy of the previous rejects)")

    proc = run_retrying(weir, "run", job("after", after), "-w", "2", "--var", "run_id=after", timeout=20)
    assert proc.returncode == 0, proc.stderr + "\n" + context
    assert attempt_dirs(out, "killed") == [], context
    assert committed_run_id(out) == "after" and committed_run_id(rejects) == "after", context
    runs = {"prev": prev, "killed": killed, "after": after}
    assert_runs(out, rejects, orders, runs, "after the run on main: " + context, rejects_only={"other": orders.expected(prev).rejects})


# ---------------------------------------------------------------------------------------
# S3 (Garage)


@pytest.fixture(scope="module")
def s3_orders(garage, orders):
    bucket = garage.new_bucket("rejects-src")
    garage.upload_dir(orders.path, bucket, "data")
    return f"s3://{bucket}/data/"


def test_a_kill_at_the_decision_on_s3_commits_both_outputs(weir, tmp_path, garage, orders, s3_orders):
    env = garage.env()
    bucket = garage.new_bucket("rejects")
    out, rejects = S3Prefix(garage, bucket, "out"), S3Prefix(garage, bucket, "rejects")
    prev, killed, after = SKIPS
    job = lambda name, skip, **kw: job_file(tmp_path / f"{name}.toml", s3_orders, out.uri, rejects.uri, skip=skip, mode="append", **kw)  # noqa: E731
    weir("run", job("prev", prev), "-w", "2", "--var", "run_id=prev", env=env, check=0)
    assert out.committed_run_id() == "prev" and rejects.committed_run_id() == "prev"

    probe = lambda: any(k.endswith("/commit.json") for k in out.attempt_keys("killed"))  # noqa: E731
    state = kill_at(job("killed", killed, ttl=2), "commit-decided", None, None, "killed", env=env, probe=probe)
    context = f"{state}\nmain: {out.keys()}\nrejects: {rejects.keys()}"
    assert out.committed_run_id() == "prev" and rejects.committed_run_id() == "prev", context

    proc = run_retrying(weir, "run", job("after", after), "-w", "2", "--var", "run_id=after", env=env, timeout=20)
    assert proc.returncode == 0, proc.stderr + "\n" + context
    context = f"{context}\nafter recovery: main {out.keys()}\nrejects {rejects.keys()}"
    runs = {"prev": prev, "killed": killed, "after": after}
    for prefix in (out, rejects):
        assert prefix.committed_run_id() == "after", context
        assert prefix.attempt_keys("killed") == [], context
        found = json.loads(prefix.get("_weir/manifest.json"))
        assert sorted(prefix.visible()) == sorted(f["path"] for f in found["files"]), context
        strays = [k for k in prefix.visible() if not any(k.endswith(f"-{r}.parquet") for r in runs)]
        assert not strays, context
    for run_id, skip in runs.items():
        assert_main(out.read_run(run_id), orders.expected(skip).main, f"S3 main rows of {run_id}: {context}")
        assert_rejects(rejects.read_run(run_id), orders.expected(skip).rejects, f"S3 rejects of {run_id}: {context}")
    assert rejects.read_visible().num_rows == sum(len(orders.expected(s).rejects) for s in runs.values())


def test_a_rejects_prefix_on_another_store_is_refused(weir, tmp_path, garage, s3_orders):
    env = garage.env()
    bucket, other = garage.new_bucket("rejects-a"), garage.new_bucket("rejects-b")
    valid = write_job(tmp_path / "valid.toml", job_text(s3_orders, f"s3://{bucket}/out/", f"s3://{bucket}/rejects/"))
    weir("validate", valid, env=env, check=0)
    for name, sink, rejects in [
        ("another-bucket", f"s3://{bucket}/out/", f"s3://{other}/rejects/"),
        ("local-rejects", f"s3://{bucket}/out/", tmp_path / "rejects"),
        ("s3-rejects", tmp_path / "out", f"s3://{bucket}/rejects/"),
    ]:
        job = write_job(tmp_path / f"{name}.toml", job_text(s3_orders, sink, rejects))
        proc = weir("validate", job, env=env)
        assert proc.returncode != 0, f"{name}: weir validate accepted it\n{proc.stdout}"
        assert "panicked" not in proc.stderr and "sink.rejects" in proc.stderr, f"{name}:\n{proc.stderr}"
    assert garage.keys(bucket) == [] and garage.keys(other) == []
