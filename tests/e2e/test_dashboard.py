"""The service's dashboard in a real browser: Debian's headless Chromium loads the page,
signs in with a token passed once in the address, and renders the runs, a run's log, the
job versions, the schedules with their ticks and the charts from the live API. The DOM it ends with is checked against the
API's own answers; screenshots go to $WEIR_SCREENSHOTS when set (docs/service.md's come from
there)."""

import html
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import write_job
from helpers import Service, wait_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (tests/run.sh installs Debian's when run as root)")

JOB = """name = "dash"
[source]
uri = "{src}"
columns = ["id", "age"]
[sink]
uri = "out/{{{{run_id}}}}"
"""


def browse(url: str, *extra: str) -> str:
    """Chromium's DOM of `url` after its scripts ran (virtual time: no sleeps)."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,720",
         "--virtual-time-budget=8000", *(extra or ("--dump-dom",)), url],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture
def service(tmp_path):
    started = Service(tmp_path.resolve(), []).start()
    yield started
    started.close()


def test_the_dashboard_shows_runs_logs_jobs_and_charts(service, tmp_path, events_dir):
    api = service.admin
    definition = write_job(tmp_path / "dash.toml", JOB.format(src=events_dir)).read_text()
    assert api.post("/v1/jobs", json={"definition": definition}).status_code == 201
    ids = []
    for _ in range(3):
        reply = api.post("/v1/runs", json={"job": "dash"})
        assert reply.status_code == 201, reply.text
        ids.append(reply.json()["id"])
    runs = [wait_run(api, run_id) for run_id in ids]
    assert {run["state"] for run in runs} == {"succeeded"}

    # Without a token the page asks for one and shows no data.
    page = browse(f"{service.url}/")
    assert "Sign in" in page and ids[0] not in page

    # Runs: every run, with its state and its rows as the API reports them.
    page = browse(f"{service.url}/#token={service.token}")
    table = re.search(r'<table id="runs">.*?</table>', page, re.S)
    assert table, page[-2000:]
    for run in runs:
        row = re.search(rf"<tr><td><a[^>]*>{run['id']}</a>.*?</tr>", table.group(0), re.S)
        assert row, run["id"]
        assert "succeeded" in row.group(0) and f"{run['rows_out']:,}" in row.group(0)

    # One run: its facts and its log, as GET /logs returns it.
    log = api.get(f"/v1/runs/{ids[0]}/logs").text
    page = html.unescape(browse(f"{service.url}/?run={ids[0]}#token={service.token}"))
    assert f"Run {ids[0]}" in page and "dash v1" in page
    assert log.strip() and log.strip() in page
    # Its stages, as the run's summary has them (the `--metrics` table).
    stages = re.search(r'<table id="stages">.*?</table>', page, re.S)
    assert stages, "no stage table"
    for stage in runs[0]["summary"]["stages"]:
        assert f"<td>{stage['stage']}</td><td>{stage['worker_seconds']:.3f}</td>" in stages.group(0), stage

    # Jobs: the version and the definition.
    page = html.unescape(browse(f"{service.url}/?view=jobs#token={service.token}"))
    assert "dash — current version 1" in page and 'columns = ["id", "age"]' in page

    # Schedules: the settings, the next ticks, and each tick's runs (two backfilled dates).
    nightly = definition.replace('name = "dash"', 'name = "nightly"\n[schedule]\ncron = "0 2 * * *"\ntimezone = "Europe/Berlin"')
    assert api.post("/v1/jobs", json={"definition": nightly}).status_code == 201
    assert api.post("/v1/jobs/nightly/backfill", json={"from": "2026-03-28", "to": "2026-03-29", "max_active": 2}).status_code == 201
    ticks = None
    for _ in range(600):
        ticks = [r for r in api.get("/v1/runs", params={"job": "nightly"}).json()["runs"] if r["state"] == "succeeded"]
        if len(ticks) == 2:
            break
        time.sleep(0.1)
    assert len(ticks) == 2
    overview = api.get("/v1/schedules").json()["schedules"]
    assert [(s["job"], s["cron"], s["timezone"], len(s["next_ticks"])) for s in overview] == [("nightly", "0 2 * * *", "Europe/Berlin", 3)]
    page = html.unescape(browse(f"{service.url}/?view=schedules#token={service.token}"))
    assert "nightly — 0 2 * * * (Europe/Berlin)" in page and overview[0]["next_ticks"][0] in page
    for tick in ticks:
        assert tick["vars"]["logical_time"] in page and tick["id"] in page
    # The spring-forward night: the tick covering 28 March fired at 03:00 CEST (01:00 UTC).
    assert "2026-03-29T01:00:00Z" in page

    # Runs show each run's logical date and what started it, as the API reports them.
    page = browse(f"{service.url}/#token={service.token}")
    for run, trigger in [(tick, "backfill") for tick in ticks] + [(run, "manual") for run in runs]:
        row = re.search(rf"<tr><td><a[^>]*>{run['id']}</a>.*?</tr>", page, re.S)
        assert row, run["id"]
        assert f'<td class="ds">{run["logical_date"] or ""}</td>' in row.group(0), row.group(0)
        assert f'<td class="trigger">{trigger}</td>' in row.group(0) and run["trigger"] == trigger, row.group(0)
    assert sorted(tick["logical_date"] for tick in ticks) == ["2026-03-28", "2026-03-29"]

    # Trends: one point per succeeded run on each of the two charts.
    page = browse(f"{service.url}/?view=chart#token={service.token}")
    runs = [run for run in api.get("/v1/runs", params={"state": "succeeded"}).json()["runs"]]
    assert page.count("<circle") == 2 * len(runs), page[-1500:]

    # A page from another site cannot use the token: the API refuses a foreign Origin.
    assert api.get("/v1/runs", headers={"Origin": "http://evil.example"}).status_code == 403

    shots = os.environ.get("WEIR_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        for name, query in [("runs", ""), ("run", f"?run={ids[0]}"), ("jobs", "?view=jobs"), ("schedules", "?view=schedules"), ("trends", "?view=chart")]:
            target = Path(shots).resolve() / f"dashboard-{name}.png"
            browse(f"{service.url}/{query}#token={service.token}", f"--screenshot={target}")
            assert target.stat().st_size > 10_000
