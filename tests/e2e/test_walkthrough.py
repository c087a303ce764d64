"""docs/nightly.md, "From your data to a nightly job", followed step by step: every fenced
block of that section runs as it is written, in order, in one shell session (each block's
exported variables carry to the next, as in a terminal). Two things differ, and only
these: block 0 (build and `cd`) is done by the test for its own build and a temporary
folder, and `weir serve` gets a free port and a clock file, which the test moves to the
night of 8 December instead of waiting for it. What the blocks leave behind is then
checked against pandas computations on the demo data."""

import json
import re
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest
import requests

from conftest import REPO, WEIR_BIN, read_output
from helpers import free_port, processes_with, wait_gone

SECTION = "# From your data to a nightly job"


def readme_blocks():
    """The section's fenced blocks, in order: (language, text)."""
    text = (REPO / "docs" / "nightly.md").read_text()
    start = text.index(SECTION)
    return re.findall(r"```(\w+)\n(.*?)```", text[start:], flags=re.S)


class Session:
    """A shell session: each block runs in bash with `-euo pipefail`, starting from the
    environment the previous block left."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env = folder, env
        self.saved = folder.parent / "session.env"

    def run(self, block: str, timeout=300) -> str:
        script = f"set -euo pipefail\n[ -f {self.saved} ] && source {self.saved}\n{block}\nexport -p > {self.saved}\n"
        import subprocess

        proc = subprocess.run(["bash", "-c", script], cwd=self.folder, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"docs/nightly.md's block failed ({proc.returncode}):\n{block}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc.stdout + proc.stderr

    def variable(self, name: str) -> str:
        match = re.search(rf'^declare -x {name}="(.*)"$', self.saved.read_text(), flags=re.M)
        assert match, f"{name} is not exported"
        return match.group(1)


def reference(ds_frame: pd.DataFrame) -> pd.DataFrame:
    """The rows the job keeps, computed with pandas: the cast turns junk into nulls, then the filter."""
    age = ds_frame["age"].astype("float64")
    tenure = pd.to_numeric(ds_frame["tenure_months"], errors="coerce")
    keep = (age >= 18) & (age < 100) & tenure.notna()
    return ds_frame[keep]


def test_the_nightly_walkthrough_works_as_written(tmp_path):
    blocks = readme_blocks()
    languages = [language for language, _ in blocks]
    assert languages == ["sh", "sh", "toml", "sh", "sh", "sh", "sh", "sh"], languages
    setup, landed, job, by_hand, service, backfill, tonight, look = (text for _, text in blocks)
    # Block 0 builds and enters a new folder: the test has its own build and folder.
    assert setup.startswith("cargo build --release") and "mkdir nightly-demo && cd nightly-demo" in setup

    folder = tmp_path / "nightly-demo"
    folder.mkdir()
    clock = tmp_path / "clock"
    clock.write_text("2026-12-07T09:00:00Z")  # the morning of 7 December
    env = {"PATH": f"{WEIR_BIN.parent}:/usr/bin:/bin", "DEMO": str(REPO / "demo" / "data"), "HOME": str(tmp_path)}
    shell = Session(folder, env)
    try:
        shell.run(landed)
        (folder / "nightly.toml").write_text(job)
        out = shell.run(by_hand)
        assert "checks: 3 of 4 expectations passed" in out, out
        assert "warning: step 4 check 'countries we serve': accepted_values(country)" in out, out

        port = free_port()
        assert "weir serve --state-dir state" in service
        started = service.replace("weir serve ", f"weir serve --listen 127.0.0.1:{port} --clock-file {clock} ", 1)
        out = shell.run(started, timeout=120)
        assert shell.variable("WEIR_SERVER") == f"http://127.0.0.1:{port}"
        assert "customers-nightly" in out and "2026-12-08T01:10:00Z" in out, out

        out = shell.run(backfill)
        finished = [line for line in out.splitlines() if "backfill #1" in line]
        assert [line.split("ds ")[1][:10] for line in finished] == ["2026-12-05", "2026-12-06"], out
        assert all("succeeded" in line for line in finished), out

        shell.run(tonight)
        clock.write_text("2026-12-08T01:10:30Z")  # 02:10:30 in Berlin: the tick of 8 December
        api = requests.Session()
        api.headers["Authorization"] = f"Bearer {shell.variable('WEIR_TOKEN')}"
        deadline = time.time() + 120
        while True:
            runs = api.get(f"http://127.0.0.1:{port}/v1/runs", params={"job": "customers-nightly"}, timeout=10).json()["runs"]
            scheduled = [run for run in runs if run["trigger"] == "schedule"]
            if scheduled and scheduled[0]["state"] not in ("queued", "running"):
                break
            assert time.time() < deadline, f"the tick of 8 December did not run: {runs}"
            time.sleep(0.2)
        assert (scheduled[0]["state"], scheduled[0]["logical_date"]) == ("succeeded", "2026-12-07"), scheduled[0]
        out = shell.run(look)
        listed = [line for line in out.splitlines() if "customers-nightly" in line]
        assert len(listed) == 3 and "ds 2026-12-07  schedule" in listed[0] and "succeeded" in listed[0], out
        assert "committed" in out, out
    finally:
        for pid in processes_with(str(clock)):
            try:
                import os

                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        wait_gone(processes_with(str(clock)))

    # Each day's output holds the rows pandas keeps, with the checks' results.
    demo = ds.dataset(REPO / "demo" / "data").to_table().to_pandas()
    expected = reference(demo)
    outside = expected["country"].notna() & ~expected["country"].isin(["DE", "FR", "US"])
    for day in ["2026-12-04", "2026-12-05", "2026-12-06", "2026-12-07"]:
        out = folder / "lake" / "customers" / f"date={day}"
        table = read_output(out)
        assert table.num_rows == len(expected), day
        assert sorted(table.column("customer_id").to_pylist()) == sorted(expected["customer_id"])
        assert set(table.column("email").drop_null().to_pylist()) <= {"***"}
        manifest = json.loads((out / "_weir" / "manifest.json").read_text())
        results = {(c["step"], c["expectation"]): c for c in manifest["checks"]}
        assert results[(1, "row_count")]["rows"] == len(demo)
        assert results[(1, "unique")]["failing_rows"] == 0
        assert results[(4, "accepted_values")]["failing_rows"] == int(outside.sum()) > 0
        assert not results[(4, "accepted_values")]["passed"]
