"""The derive benchmark: "derive + filter" throughput, Weir against DuckDB and Polars on the
same expressions, interleaved repetitions.

    .venv/bin/python bench/derive_bench.py [--rows 10000000] [--reps 3] [--systems KEYS]
                                           [--weir target/release/weir]

(KEYS are comma-separated out of weir2p, weir2, duckdb, polars; run it with ./.venv's
Python from tests/run.sh, which has pyarrow and numpy for the checks.)

Workload, the same for every system: bench/gen_data.py's seeded data (ROWS rows: `id`
int64, 32 float64 features `f_00..f_31` with 5% nulls, a string `category`; 4 files, row
groups of 128 Ki rows; generated under bench/data/derive-ROWS/data when missing, or
bench/data/peers-S|M|L/data reused when ROWS is one of the peers sizes and it is there) →
9 derived columns (DERIVED below: arithmetic, `ln`, `sqrt`, `abs`, `round`, `case when`,
`coalesce`, `upper`/`length`/`concat` on the category, a comparison flag), every one
reading the input as in one SQL `SELECT` list → a filter on the derived flag `keep`
(`f_12 > 12`: about 47.5% of the rows; a null flag drops its row) → every input column
and the derived ones, in that order, as zstd Parquet at level 1 in row groups of 128 Ki
rows (Weir's sink defaults: level 1, 131,072 rows).

Semantics are DuckDB's. The expressions are written once for Weir (DERIVED); DuckDB gets
the same text with every decimal literal cast to DOUBLE (`2.5` → `2.5::DOUBLE`, which is
what a decimal literal is in Weir; in DuckDB it would be a DECIMAL). Polars gets the
hand-written equivalents of POLARS_EXPRESSIONS: `log` and `sqrt` of a negative are NaN and
`log(0)` is -inf there too, `round(2, mode="half_away_from_zero")` is DuckDB's rounding
(Polars' default is half to even), `concat_str(..., ignore_nulls=True)` skips nulls as
`concat` does, `when/then` treats a null condition as false as `case` does, arithmetic
and comparisons propagate nulls, `filter` drops rows whose condition is null as WHERE does.

Systems (keys in brackets), each a whole process timed by `/usr/bin/time -f '%e %M'`:
- Weir, 2 processes x 1 worker and 1 process x 2 workers [weir2p, weir2]: `weir run
  JOB --json` with a `derive` step and a `filter` step (the job is written next to the data);
- DuckDB [duckdb]: `COPY (SELECT * FROM (SELECT *, <expr> AS <name>, ... FROM
  read_parquet(...)) WHERE keep) TO 'OUT/data.parquet' (FORMAT parquet, COMPRESSION zstd,
  COMPRESSION_LEVEL 1, ROW_GROUP_SIZE 131072)` with `threads` = the machine's cores;
- Polars [polars]: `scan_parquet` → `with_columns` → `filter` → `sink_parquet` (zstd
  level 1, row groups of 131,072 rows), on all cores (Polars' default).
The peers run this very file (`derive_bench.py peer duckdb|polars DATA OUT`, which imports
only its engine) with the first Python of bench/.venv-peers and ./.venv that imports the
engine; a peer neither has is skipped with a note. Their wall time includes starting
Python and importing the engine (about 0.1-0.3 s); the time each measured inside itself
(`inner_s`: from before the query to after the write) is recorded beside it.

Every repetition runs every system once, in the order above rotated by one system per
repetition (as bench/peers.py does: on a VM a run straight after one that wrote gigabytes
can be slower). Each output is read back and compared with the reference's (Weir at 2
processes, else at 2 workers, else the first system that ran) and then deleted: the same
row count, the same column names in the same order, and on every 1024th id among the
rows kept the same ids and, for every derived column, the same values: floats within 1e-9
relative (NaN = NaN, inf = inf, null = null), everything else exactly. A disagreement is
recorded and printed with the expression and both values, not fatal; a failed run
(non-zero exit) is recorded with its last lines of stderr.

Report: wall time per system as the best of --reps (and the median), rows/s (input rows
over the best wall), and each system's best wall divided by Weir's (2 processes and 2
workers), in bench/results/derive-ROWS.json and bench/results/derive-ROWS.md, rewritten
after every repetition. The machine's load average is recorded before every run.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SIZES = {"S": 1_000_000, "M": 10_000_000, "L": 50_000_000}
# Every system, in the order the first repetition runs them (later ones rotate it).
SYSTEM_KEYS = ["weir2p", "weir2", "duckdb", "polars"]
# Whose values the others are checked against, in order of preference.
REFERENCE_KEYS = ["weir2p", "weir2"]
RELATIVE_TOLERANCE = 1e-9
ROW_GROUP_ROWS = 128 * 1024
ZSTD_LEVEL = 1
# Interpreters a peer may run under, in order of preference (bench/peers.sh makes the first).
PEER_PYTHONS = [BENCH / ".venv-peers" / "bin" / "python", Path(sys.executable)]

# The derived columns, in the order they are appended: Weir's expressions (DuckDB's, but for
# decimal literals: see duckdb_expression). Every one reads the step's input.
DERIVED = {
    "log_mag": "ln(1 + abs(f_00))",
    "log_raw": "ln(f_01)",  # f_01 is negative on ~45% of the rows: NaN
    "root": "sqrt(f_02 * f_02 + f_03 * f_03)",
    "ratio": "(f_04 - f_05) / (1 + abs(f_06))",
    "rounded": "round(f_10 * 2.5 - f_11 / 3, 2)",
    "tier": "case when f_07 < 0 then 0 when f_07 < 7 then 1 else 2 end",
    "filled": "coalesce(f_08, f_09, 0)",
    "label": "concat(upper(category), '-', cast(length(category) as varchar))",
    "keep": "f_12 > 12",
}
FILTER = "keep"


def duckdb_expression(text: str) -> str:
    """`text` for DuckDB: a decimal literal is a DOUBLE, as in Weir (the expressions hold no
    string literal with digits in it)."""
    return re.sub(r"(?<![\w.])(\d+\.\d*(?:[eE][-+]?\d+)?)(?![\w.])", r"\1::DOUBLE", text)


def polars_expressions(pl) -> dict:
    """DERIVED in Polars, the same names in the same order, DuckDB's semantics."""
    c = pl.col
    return {
        "log_mag": (1 + c("f_00").abs()).log(),
        "log_raw": c("f_01").log(),
        "root": (c("f_02") * c("f_02") + c("f_03") * c("f_03")).sqrt(),
        "ratio": (c("f_04") - c("f_05")) / (1 + c("f_06").abs()),
        "rounded": (c("f_10") * 2.5 - c("f_11") / 3).round(2, mode="half_away_from_zero"),
        "tier": pl.when(c("f_07") < 0).then(pl.lit(0, pl.Int32)).when(c("f_07") < 7).then(pl.lit(1, pl.Int32)).otherwise(pl.lit(2, pl.Int32)),
        "filled": pl.coalesce(c("f_08"), c("f_09"), pl.lit(0.0)),
        "label": pl.concat_str(
            [c("category").str.to_uppercase(), pl.lit("-"), c("category").str.len_chars().cast(pl.Int64).cast(pl.String)],
            ignore_nulls=True,
        ),
        "keep": c("f_12") > 12,
    }


# The Polars expressions as written above, for the report.
POLARS_TEXT = {
    "log_mag": "(1 + col('f_00').abs()).log()",
    "log_raw": "col('f_01').log()",
    "root": "(col('f_02') * col('f_02') + col('f_03') * col('f_03')).sqrt()",
    "ratio": "(col('f_04') - col('f_05')) / (1 + col('f_06').abs())",
    "rounded": "(col('f_10') * 2.5 - col('f_11') / 3).round(2, mode='half_away_from_zero')",
    "tier": "when(col('f_07') < 0).then(0).when(col('f_07') < 7).then(1).otherwise(2) (Int32)",
    "filled": "coalesce(col('f_08'), col('f_09'), lit(0.0))",
    "label": "concat_str([col('category').str.to_uppercase(), lit('-'), col('category').str.len_chars().cast(Int64).cast(String)], ignore_nulls=True)",
    "keep": "col('f_12') > 12",
}


# ---------------------------------------------------------------------------------------
# The peers (run as `derive_bench.py peer ENGINE DATA OUT`; they import only their engine).


def peer_duckdb(data: Path, out: Path) -> dict:
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(config={"threads": os.cpu_count()})
    derived = ", ".join(f'{duckdb_expression(text)} AS "{name}"' for name, text in DERIVED.items())
    source = str(data / "*.parquet").replace("'", "''")
    target = str(out / "data.parquet").replace("'", "''")
    con.execute(
        f"COPY (SELECT * FROM (SELECT *, {derived} FROM read_parquet('{source}')) WHERE {duckdb_expression(FILTER)}) "
        f"TO '{target}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {ZSTD_LEVEL}, ROW_GROUP_SIZE {ROW_GROUP_ROWS})"
    )
    con.close()
    return {"engine": "duckdb", "version": duckdb.__version__, "threads": os.cpu_count(), "inner_s": time.perf_counter() - started}


def peer_polars(data: Path, out: Path) -> dict:
    import polars as pl

    started = time.perf_counter()
    expressions = polars_expressions(pl)
    (
        pl.scan_parquet(str(data / "*.parquet"))
        .with_columns(**expressions)
        .filter(pl.col(FILTER))
        .sink_parquet(str(out / "data.parquet"), compression="zstd", compression_level=ZSTD_LEVEL, row_group_size=ROW_GROUP_ROWS)
    )
    return {"engine": "polars", "version": pl.__version__, "threads": pl.thread_pool_size(), "inner_s": time.perf_counter() - started}


PEERS = {"duckdb": peer_duckdb, "polars": peer_polars}


def peer_python(engine: str):
    """The first interpreter of PEER_PYTHONS that imports `engine`, with its version, or None."""
    for python in PEER_PYTHONS:
        if not python.exists():
            continue
        proc = subprocess.run([str(python), "-c", f"import {engine}; print({engine}.__version__)"], capture_output=True, text=True)
        if proc.returncode == 0:
            return str(python), proc.stdout.strip()
    return None


# ---------------------------------------------------------------------------------------
# The harness.


def weir_job(data: Path, out: Path) -> str:
    columns = ", ".join(f"{name} = {json.dumps(text)}" for name, text in DERIVED.items())
    return f"""name = "bench-derive"
[source]
uri = {json.dumps(str(data))}
[[step]]
op = "derive"
columns = {{ {columns} }}
[[step]]
op = "filter"
expr = {json.dumps(FILTER)}
[sink]
uri = {json.dumps(str(out))}
mode = "overwrite"
"""


def timed(command) -> dict:
    """Runs `command` under /usr/bin/time (as bench/peers.py does); a failed run is recorded
    with its exit status and last lines instead of stopping the benchmark."""
    load = os.getloadavg()[0]
    try:
        proc = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *command], capture_output=True, text=True, cwd=REPO)
    except OSError as error:
        return {"wall_s": float("nan"), "peak_rss_mib": 0.0, "load_before": load, "stdout": "", "failed": str(error)}
    found = re.findall(r"TIME ([\d.]+) (\d+)", proc.stderr)
    wall, rss = found[-1] if found else ("nan", "0")
    run = {"wall_s": float(wall), "peak_rss_mib": int(rss) / 1024, "load_before": round(load, 2), "stdout": proc.stdout}
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.splitlines() if not line.startswith("TIME ")][-5:]
        run["failed"] = f"exit {proc.returncode}: " + " | ".join(tail)
    return run


def last_json(stdout: str):
    """The last line of `stdout` that is a JSON object, or None."""
    for line in reversed((stdout or "").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def read_output(out: Path) -> dict:
    """The output's row count, bytes, columns (as `name: type`) and the derived columns on
    every 1024th id, sorted by id."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # Not Weir's own bookkeeping under _weir/ (its manifest; staged files before a commit).
    files = sorted(f for f in out.rglob("*.parquet") if "_weir" not in f.relative_to(out).parts)
    if not files:
        raise ValueError(f"no Parquet files in {out}")
    schema = pq.read_schema(files[0])
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    table = pq.ParquetDataset(files).read(columns=["id", *DERIVED])
    sample = table.filter(pc.equal(pc.bit_wise_and(table["id"], 1023), 0)).sort_by("id")
    return {
        "rows": rows,
        "files": len(files),
        "bytes": sum(f.stat().st_size for f in files),
        "columns": [f"{f.name}: {f.type}" for f in schema],
        "ids": sample["id"].to_pylist(),
        "values": {name: sample[name].to_pylist() for name in DERIVED},
    }


def same_value(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, bool) or isinstance(b, bool):
            return False
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        if math.isinf(a) or math.isinf(b):
            return a == b
        return abs(a - b) <= RELATIVE_TOLERANCE * max(abs(a), abs(b))
    return a == b


def compare(got: dict, reference: dict) -> dict:
    """Checks one output against the reference's; the verdict goes into the run."""
    check = {"rows_written": got["rows"], "files": got["files"], "output_bytes": got["bytes"], "sampled": len(got["ids"])}
    problems, disagreements = [], []
    if got["rows"] != reference["rows"]:
        problems.append(f"wrote {got['rows']} rows, the reference {reference['rows']}")
    names = [c.split(":")[0] for c in got["columns"]]
    reference_names = [c.split(":")[0] for c in reference["columns"]]
    if names != reference_names:
        problems.append(f"columns {names} are not the reference's {reference_names}")
    if got["ids"] != reference["ids"]:
        problems.append(f"kept other sampled ids ({len(got['ids'])} against {len(reference['ids'])})")
    else:
        for name in DERIVED:
            bad = [
                (i, a, b)
                for i, a, b in zip(got["ids"], got["values"][name], reference["values"][name])
                if not same_value(a, b)
            ]
            if bad:
                i, a, b = bad[0]
                disagreements.append(
                    {"column": name, "expression": DERIVED[name], "rows": len(bad), "first_id": i, "value": a, "reference_value": b}
                )
        if disagreements:
            problems.append(
                "; ".join(f"{d['column']} differs on {d['rows']} sampled rows (id {d['first_id']}: {d['value']!r} vs {d['reference_value']!r})" for d in disagreements)
            )
    if disagreements:
        check["disagreements"] = disagreements
    if problems:
        check["check_failed"] = "; ".join(problems)
    return check


def write_report(rows: int, reps: int, systems: dict, runs: dict, columns: dict, reference_key, notes: list, data: Path):
    """Writes results/derive-ROWS.{json,md} from the runs so far."""
    results = []
    for key, measured in runs.items():
        if not measured:
            continue
        name = systems[key][0]
        succeeded = [m for m in measured if "failed" not in m]
        result = {"system": name, "key": key, "reps": len(measured), "columns": columns.get(key)}
        if succeeded:
            walls = sorted(m["wall_s"] for m in succeeded)
            best = min(succeeded, key=lambda m: m["wall_s"])
            result.update(
                wall_s=walls[0],
                median_wall_s=walls[(len(walls) - 1) // 2],
                rows_per_s=rows / walls[0],
                peak_rss_mib=best["peak_rss_mib"],
            )
            reported = last_json(best.get("stdout"))
            if reported is not None:
                result["reported"] = reported
            if "output_bytes" in best:
                result["output_mib"] = best["output_bytes"] / 2**20
            if "rows_written" in best:
                result["rows_written"] = best["rows_written"]
            bad = [m for m in succeeded if "check_failed" in m]
            if bad:
                result["check_failed"] = bad[0]["check_failed"]
                result["disagreements"] = bad[0].get("disagreements", [])
            result["checked"] = any("sampled" in m for m in succeeded)
        else:
            result["failed"] = measured[0]["failed"]
        result["runs"] = [{k: v for k, v in m.items() if k != "stdout"} for m in measured]
        results.append(result)
    by_key = {r["key"]: r for r in results}
    weir2p = by_key.get("weir2p", {}).get("wall_s")
    weir2 = by_key.get("weir2", {}).get("wall_s")
    for result in results:
        if "wall_s" in result:
            result["ratio_to_weir_2_processes"] = result["wall_s"] / weir2p if weir2p else None
            result["ratio_to_weir_2_workers"] = result["wall_s"] / weir2 if weir2 else None
    machine = {
        "cores": os.cpu_count(),
        "ram_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "platform": platform.platform(),
    }
    report = {
        "date": datetime.date.today().isoformat(),
        "rows": rows,
        "reps": reps,
        "data": str(data),
        "machine": machine,
        "workload": {
            "derived": DERIVED,
            "duckdb": {name: duckdb_expression(text) for name, text in DERIVED.items()},
            "polars": POLARS_TEXT,
            "filter": FILTER,
        },
        "reference": reference_key,
        "relative_tolerance": RELATIVE_TOLERANCE,
        "notes": notes,
        "results": results,
    }
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"derive-{rows}.json").write_text(json.dumps(report, indent=2) + "\n")

    ratio = lambda value: "n/a" if value is None else f"{value:.2f}"  # noqa: E731
    loads = [m["load_before"] for measured in runs.values() for m in measured if "load_before" in m]
    kept = next((r["rows_written"] for r in results if r["key"] == reference_key and "rows_written" in r), None)
    lines = [
        f"Derive + filter ({rows:,} rows in"
        + (f", {kept:,} kept" if kept is not None else "")
        + f"; {len(DERIVED)} derived columns → zstd Parquet), {report['date']}, {machine['cores']} cores, "
        f"{machine['ram_gib']} GiB; best of {reps} interleaved run(s), the order rotated by one system each repetition"
        + (f"; load average before the runs {min(loads):.1f}–{max(loads):.1f}" if loads else ""),
        "",
        "| system | wall s (best) | median s | rows/s | peak RSS MiB | output MiB | vs Weir 2 processes | vs Weir 2 workers | check |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        if "failed" in r:
            peak = max(run["peak_rss_mib"] for run in r["runs"])
            lines.append(f"| {r['system']} | failed: {r['failed'][:160]} | | | {peak:.0f} before it failed | | | | |")
            continue
        if "check_failed" in r:
            check = f"**{r['check_failed'][:300]}**"
        elif r["key"] == reference_key:
            check = "reference"
        else:
            check = "same" if r.get("checked") else "not checked"
        lines.append(
            f"| {r['system']} | {r['wall_s']:.2f} | {r['median_wall_s']:.2f} | {r['rows_per_s']:,.0f} | {r['peak_rss_mib']:.0f} | "
            + (f"{r['output_mib']:,.0f} | " if "output_mib" in r else "n/a | ")
            + f"{ratio(r['ratio_to_weir_2_processes'])} | {ratio(r['ratio_to_weir_2_workers'])} | {check} |"
        )
    inner = [f"{r['system']} {r['reported']['inner_s']:.2f} s" for r in results if "inner_s" in r.get("reported", {})]
    lines += [
        "",
        f"Check: row count, column names and every derived column on every 1024th id against "
        f"{systems[reference_key][0] if reference_key else 'no reference'}'s (floats within {RELATIVE_TOLERANCE:g} relative, "
        "NaN = NaN). Wall: the whole process (/usr/bin/time), Python's start and imports included for the peers"
        + (f"; measured inside the peers' processes (best run): {', '.join(inner)}" if inner else "")
        + ". Peak RSS: the largest single process.",
        "",
        f"Derived columns (Weir; DuckDB's the same with decimal literals as `::DOUBLE`), then `filter` on `{FILTER}`:",
        "",
    ]
    lines += [f"- `{name}` = `{text}`" for name, text in DERIVED.items()]
    reference_columns = columns.get(reference_key) if reference_key else None
    if reference_columns:
        derived_types = [c for c in reference_columns if c.split(":")[0] in DERIVED]
        lines += ["", f"Derived column types, {systems[reference_key][0]}: " + ", ".join(f"`{c}`" for c in derived_types) + "."]
        for key, cols in columns.items():
            if key == reference_key or cols is None:
                continue
            differ = [c for c in cols if c not in reference_columns]
            lines.append(f"- {systems[key][0]}: " + ("the same types." if not differ else "writes " + ", ".join(f"`{c}`" for c in differ) + "."))
    lines += [f"\n{note}" for note in notes]
    (out_dir / f"derive-{rows}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def find_data(rows: int) -> Path:
    """The gen_data.py dataset of `rows` rows: a peers dataset of that size if there is one,
    else bench/data/derive-ROWS/data, generated when missing."""
    candidates = [BENCH / "data" / f"peers-{size}" / "data" for size, n in SIZES.items() if n == rows]
    own = BENCH / "data" / f"derive-{rows}" / "data"
    for data in [own, *candidates]:
        if any(data.glob("*.parquet")):
            return data
    subprocess.run([sys.executable, str(BENCH / "gen_data.py"), str(rows), str(own), "--files", "4"], check=True)
    return own


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--weir", default=str(REPO / "target" / "release" / "weir"))
    parser.add_argument("--systems", default=None, help=f"comma-separated keys out of {','.join(SYSTEM_KEYS)} (default: all)")
    args = parser.parse_args()
    keys = args.systems.split(",") if args.systems else list(SYSTEM_KEYS)
    unknown = set(keys) - set(SYSTEM_KEYS)
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEM_KEYS)}")
    notes = []
    pythons = {}
    for engine in ("duckdb", "polars"):
        if engine not in keys:
            continue
        found = peer_python(engine)
        if found is None:
            message = f"{engine} was not run: neither bench/.venv-peers nor {sys.executable} imports it."
            print(message, flush=True)
            notes.append(message)
            keys.remove(engine)
        else:
            pythons[engine] = found[0]
            notes.append(f"{engine} {found[1]} from {os.path.relpath(found[0], REPO)}.")

    data = find_data(args.rows)
    work = BENCH / "data" / f"derive-{args.rows}"
    work.mkdir(parents=True, exist_ok=True)

    def weir(key: str, flags: list) -> list:
        job = work / f"derive-{key}.toml"
        job.write_text(weir_job(data, work / f"out-{key}"))
        return [args.weir, "run", str(job), "--json", *flags]

    def peer(engine: str) -> list:
        return [pythons[engine], str(Path(__file__).resolve()), "peer", engine, str(data), str(work / f"out-{engine}")]

    every = {
        "weir2p": ("weir 2 processes x 1 worker", lambda: weir("weir2p", ["--processes", "2", "--workers", "1"])),
        "weir2": ("weir 2 workers", lambda: weir("weir2", ["--workers", "2"])),
        "duckdb": (f"DuckDB ({os.cpu_count()} threads)", lambda: peer("duckdb")),
        "polars": ("Polars (streaming sink)", lambda: peer("polars")),
    }
    systems = {key: (every[key][0], every[key][1](), work / f"out-{key}") for key in SYSTEM_KEYS if key in keys}
    reference_key = next((k for k in REFERENCE_KEYS if k in systems), next(iter(systems), None))

    runs = {key: [] for key in systems}
    columns = {}
    reference = None
    order = list(systems.items())
    for rep in range(args.reps):
        samples = {}
        start = rep % max(len(order), 1)
        for key, (name, command, out) in order[start:] + order[:start]:
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            run = timed(command)
            if "failed" not in run:
                try:
                    got = read_output(out)
                    samples[key] = (run, got)
                    columns.setdefault(key, got["columns"])
                except Exception as error:  # an unreadable output is this system's failure
                    run["failed"] = f"output unreadable: {error}"
            runs[key].append(run)
            outcome = run.get("failed") or "{:.2f} s, {:.0f} MiB".format(run["wall_s"], run["peak_rss_mib"])
            print(f"{name}: {outcome}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        if reference is None:
            found = [k for k in [*REFERENCE_KEYS, *systems] if k in samples]
            if found:
                reference_key = reference_key if reference_key in samples else found[0]
                reference = samples[reference_key][1]
        for key, (run, got) in samples.items():
            if reference is not None:
                run.update(compare(got, reference))
                if "check_failed" in run:
                    print(f"{systems[key][0]}: CHECK FAILED: {run['check_failed']}", flush=True)
        write_report(args.rows, args.reps, systems, runs, columns, reference_key, notes, data)


if __name__ == "__main__":
    if sys.argv[1:2] == ["peer"]:
        if len(sys.argv) != 5 or sys.argv[2] not in PEERS:
            sys.exit(f"usage: {sys.argv[0]} peer {'|'.join(PEERS)} DATA_DIR OUT_DIR")
        print(json.dumps(PEERS[sys.argv[2]](Path(sys.argv[3]), Path(sys.argv[4]))))
    else:
        main()
