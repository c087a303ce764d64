"""Hostile input against `weir serve` and the CLI (issue #42's cases, and #41's closed pipe).

Each case is what an adversarial test found taking the service down, wedging it, deleting
committed data or crossing from one job into another; each asserts the refusal (status and
message), that `/healthz` still answers afterwards, and that nothing was lost:

- a filter of 3,000 chained `+` / `*` / `||` / `=` (a stack overflow in the service): 422
  from `POST /v1/runs` and `POST /v1/jobs`, exit 2 from `weir validate`;
- a backfill from year -262143 (a date overflow panic): 422;
- a `model` that is a FIFO (validation blocked for ever; 530 of them wedged the blocking
  pool): 422 after `--check-timeout-s`, twelve at once (more than the four checkers)
  leave the service answering and a normal submission accepted;
- a `model` of 3 GiB (read whole into memory): refused naming its size, before a byte is read;
- a run id ending in `.` (publishing deleted the committed output, then refused to go
  on): exit 2 before anything is claimed, the committed output read back unchanged by
  pyarrow; a var key `"run_id "` that the child would have trimmed: 422;
- an idempotency key `schedule/nightly/<tick>` from a token scoped to another job (the
  nightly tick was skipped silently): the tick runs; and a backfill that includes a date
  whose interval has not ended on the service's (driven) clock: 422, the tick then runs
  by itself;
- a `_weir` or partition folder inside the output that is a symlink to elsewhere (writes
  went through it): exit 2 before the claim, nothing written there; a variable `ds=a/../../b`
  in a sink's URI: exit 2;
- a token limited to URI prefixes that names another job's source, output, model or
  fitted parameters (with `..` too), the service's state folder, or an S3 endpoint the
  service does not allow (its credentials would go there): 403 naming the field, before
  anything is read; no connection reaches the endpoint;
- `error_if_exists` or `append` into a home directory holding only dotfiles: refused, as
  `overwrite` was;
- a value that cannot be cast, in a column masked later under another name: the error
  names the row, never the value (CLI, run record, log);
- a client that stops inside its request's headers or body: cut off (408 for the body)
  after the 10 s read timeout, while the service answers others;
- `weir ls --json` and `weir head` writing into a closed pipe: exit 0, nothing on stderr.
"""

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from conftest import WEIR_BIN, read_output, write_job
from helpers import Service, expect, expect_error, submit, wait_run


@pytest.fixture
def small(tmp_path):
    """1,000 rows (`id`, `x`) in one file under tmp_path/small."""
    src = tmp_path / "small"
    src.mkdir()
    rng = np.random.default_rng(42)
    table = pa.table({"id": np.arange(1_000, dtype=np.int64), "x": rng.random(1_000)})
    pq.write_table(table, src / "part-0.parquet", row_group_size=250)
    return table


def job(name, expr="x >= 0.5", extra="", sink=None):
    return f"""name = "{name}"
[source]
uri = "small"
[[step]]
op = "filter"
expr = "{expr}"
{extra}
[sink]
uri = "{sink or f'out/{name}/{{{{run_id}}}}'}"
"""


def healthy(service):
    response = requests.get(service.url + "/healthz", timeout=10)
    assert response.status_code == 200 and response.text == "ok", response.text
    assert service.proc.poll() is None, f"weir serve exited {service.proc.returncode}:\n{service.output}"


@pytest.fixture
def service(tmp_path):
    svc = Service(tmp_path.resolve(), ["--check-timeout-s", "3"]).start()
    yield svc
    svc.close()


@pytest.mark.parametrize("operator", ["+", "*", "||", "="])
def test_a_filter_of_3000_chained_operators_is_refused_and_the_service_answers(service, weir, small, tmp_path, operator):
    expr = "x " + f"{operator} x " * 3000 + "> 1"
    message = expect_error(service.admin.post("/v1/runs", json={"definition": job("deep", expr)}), 422)
    assert "at most 1000 are allowed" in message, message
    healthy(service)
    message = expect_error(service.admin.post("/v1/jobs", json={"definition": job("deep", expr)}), 422)
    assert "at most 1000 are allowed" in message, message
    healthy(service)
    proc = weir("validate", write_job(tmp_path / "deep.toml", job("deep", expr)), cwd=tmp_path, check=2)
    assert "at most 1000 are allowed" in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    # The service still does its work.
    run = submit(service.admin, {"definition": job("fine")})
    assert wait_run(service.admin, run["id"])["state"] == "succeeded"


def test_a_schema_nested_2000_levels_deep_is_refused_by_the_cli_and_the_service(service, weir, tmp_path):
    deep = tmp_path / "deep"
    deep.mkdir()
    column = pa.array([1, 2, 3])
    for _ in range(2000):
        column = pa.StructArray.from_arrays([column], names=["f"])
    # Without pyarrow's own schema in the footer, whose reader has a depth limit of its own.
    pq.write_table(pa.table({"id": [1, 2, 3], "s": column}), deep / "part-0.parquet", store_schema=False)
    definition = 'name = "deep"\n[source]\nuri = "deep"\n[sink]\nuri = "out/deep"\n'
    path = write_job(tmp_path / "deep.toml", definition)
    for args in [["head", deep], ["schema", deep], ["run", path], ["validate", path]]:
        proc = weir(*args, cwd=tmp_path, check=2)
        assert "part-0.parquet" in proc.stderr and "nests 2001 levels deep" in proc.stderr, (args, proc.stderr)
    message = expect_error(service.admin.post("/v1/runs", json={"definition": definition}), 422)
    assert "nests 2001 levels deep" in message, message
    healthy(service)
    assert not (tmp_path / "out").exists()


def test_a_backfill_from_the_far_past_is_refused_not_a_panic(service, small):
    expect(service.admin.post("/v1/jobs", json={"definition": job("daily")}), 201)
    for body in [{"from": "-262143-01-01", "to": "2026-01-01"}, {"from": "2026-01-01", "to": "+262142-12-31"}]:
        message = expect_error(service.admin.post("/v1/jobs/daily/backfill", json={**body, "dry_run": True}), 422)
        assert "out of range" in message, message
        healthy(service)


def test_a_model_that_is_a_fifo_times_out_and_twelve_at_once_do_not_wedge_the_service(service, small, tmp_path):
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    score = '[[step]]\nop = "score"\nmodel = "model.onnx"\ninputs = { x = ["x"] }\noutputs = { y = "y" }'
    definition = job("fifo", extra=score)
    started = time.monotonic()
    message = expect_error(service.admin.post("/v1/runs", json={"definition": definition}), 422)
    assert "took longer than 3 s" in message and "FIFO" in message, message
    assert time.monotonic() - started < 20
    healthy(service)

    def hostile(_):
        return service.admin.post("/v1/runs", json={"definition": definition}).status_code

    with ThreadPoolExecutor(12) as pool:
        pending = [pool.submit(hostile, i) for i in range(12)]
        # While every checker is stuck on the FIFO, the service answers.
        healthy(service)
        statuses = [f.result(timeout=60) for f in pending]
    # Four checkers at a time, each killed at 3 s: some are refused as hanging, the rest as busy.
    assert set(statuses) <= {422, 503} and 422 in statuses, statuses
    healthy(service)
    run = submit(service.admin, {"definition": job("after")})
    assert wait_run(service.admin, run["id"])["state"] == "succeeded"
    # No checker is left behind.
    leftovers = subprocess.run(["pgrep", "-f", f"{WEIR_BIN} check-definition"], capture_output=True, text=True).stdout
    assert leftovers.strip() == "", leftovers


def test_a_model_larger_than_onnx_allows_is_refused_before_it_is_read(service, weir, small, tmp_path):
    huge = tmp_path / "huge.onnx"
    with open(huge, "wb") as f:
        f.truncate(3 << 30)  # 3 GiB, sparse: nothing is written to disk
    score = '[[step]]\nop = "score"\nmodel = "huge.onnx"\ninputs = { x = ["x"] }\noutputs = { y = "y" }'
    definition = job("huge", extra=score)
    proc = weir("validate", write_job(tmp_path / "huge.toml", definition), cwd=tmp_path, check=2)
    assert "it is 3221225472 bytes; at most 2147483648 are read" in proc.stderr, proc.stderr
    message = expect_error(service.admin.post("/v1/runs", json={"definition": definition}), 422)
    assert "3221225472 bytes" in message, message
    healthy(service)


def test_a_run_id_ending_in_a_dot_is_refused_before_anything_is_deleted(weir, small, tmp_path):
    out = tmp_path / "out"
    path = write_job(tmp_path / "job.toml", job("dots", sink=str(out)).replace("[sink]\n", "[sink]\nmode = \"overwrite\"\n"))
    weir("run", path, "--var", "run_id=v1", cwd=tmp_path, check=0)
    before = sorted(p.name for p in out.iterdir())
    committed = read_output(out)
    for bad in ["v1.", ".v1", "v1..2", "a/b"]:
        proc = weir("run", path, "--var", f"run_id={bad}", cwd=tmp_path, check=2)
        assert "run id" in proc.stderr and "is not allowed" in proc.stderr, proc.stderr
        assert sorted(p.name for p in out.iterdir()) == before
    assert read_output(out).equals(committed)
    assert committed.num_rows == int((small["x"].to_numpy() >= 0.5).sum())
    # The next run goes on as usual.
    weir("run", path, "--var", "run_id=v2", cwd=tmp_path, check=0)
    parts = [p.name for p in out.iterdir() if p.suffix == ".parquet"]
    assert parts and all(name.endswith("-v2.parquet") for name in parts), parts
    assert read_output(out).sort_by("id").equals(committed.sort_by("id"))


@pytest.mark.parametrize("link", ["_weir", "k=1"])
def test_no_write_goes_through_a_symlink_inside_the_output(weir, small, tmp_path, link):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (outside / "fitted.json").write_text("theirs")
    path = write_job(tmp_path / "job.toml", job("linked", sink=str(out)).replace("[sink]\n", "[sink]\nmode = \"overwrite\"\n"))
    weir("run", path, "--var", "run_id=first", cwd=tmp_path, check=0)
    committed = read_output(out)
    (out / link).rename(tmp_path / "moved") if (out / link).exists() else None
    os.symlink(outside, out / link)
    proc = weir("run", path, "--var", "run_id=second", cwd=tmp_path, check=2)
    assert "symbolic link" in proc.stderr and link in proc.stderr, proc.stderr
    assert sorted(p.name for p in outside.iterdir()) == ["fitted.json"] and (outside / "fitted.json").read_text() == "theirs"
    if link != "_weir":
        assert read_output(out).equals(committed)


def test_a_value_that_cannot_be_cast_is_not_shown_when_its_column_is_masked_later(service, weir, tmp_path):
    cards = tmp_path / "cards"
    cards.mkdir()
    pq.write_table(pa.table({"id": [1, 2, 3], "card": ["12", "34", "4111-1111-1111-1111"]}), cards / "part-0.parquet")
    steps = (
        '[[step]]\nop = "rename"\ncolumns = { card = "pan" }\n'
        '[[step]]\nop = "cast"\ncolumns = { pan = "int64" }\n'
        '[[step]]\nop = "mask"\ncolumns = ["pan"]\nmethod = "redact"\n'
    )
    definition = f'name = "cards"\n[source]\nuri = "cards"\n{steps}[sink]\nuri = "out/cards"\n'
    proc = weir("run", write_job(tmp_path / "cards.toml", definition), cwd=tmp_path, check=2)
    assert "column 'pan'" in proc.stderr and "row 2" in proc.stderr and "not shown" in proc.stderr, proc.stderr
    assert "4111" not in proc.stderr + proc.stdout
    run = submit(service.admin, {"definition": definition})
    ended = wait_run(service.admin, run["id"])
    assert ended["state"] == "failed" and ended["exit_class"] == "user" and "not shown" in ended["error"], ended
    logs = service.admin.get(f"/v1/runs/{run['id']}/logs").text
    assert "4111" not in json.dumps(ended) + logs
    # Unmasked, the value helps whoever fixes the data.
    plain = definition.replace('[[step]]\nop = "mask"\ncolumns = ["pan"]\nmethod = "redact"\n', "")
    assert "'4111-1111-1111-1111'" in weir("run", write_job(tmp_path / "plain.toml", plain), cwd=tmp_path, check=2).stderr


@pytest.mark.parametrize("mode", ["error_if_exists", "append"])
def test_no_mode_writes_into_a_home_directory(weir, small, tmp_path, mode):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# only dotfiles: it looks empty\n")
    path = write_job(tmp_path / "job.toml", job("homely", sink=str(home)).replace("[sink]\n", f"[sink]\nmode = \"{mode}\"\n"))
    proc = weir("run", path, cwd=tmp_path, env={**os.environ, "HOME": str(home)}, check=2)
    assert "refusing to write into" in proc.stderr and "home directory" in proc.stderr, proc.stderr
    assert sorted(p.name for p in home.iterdir()) == [".bashrc"]


def test_a_variable_cannot_lead_a_path_out_of_its_folder(weir, small, tmp_path):
    base = tmp_path / "base"
    path = write_job(tmp_path / "job.toml", job("escape", sink=f"{base}/date={{{{ds}}}}"))
    proc = weir("run", path, "--var", "ds=a/../../b", cwd=tmp_path, check=2)
    assert "'..' path segment" in proc.stderr and "{{ds}}" in proc.stderr, proc.stderr
    assert not (tmp_path / "b").exists() and not base.exists()


def test_var_keys_are_checked_as_the_run_reads_them(service, small):
    for key in ["run_id ", " run_id", "run_id", "a b", "", "x=y"]:
        message = expect_error(service.admin.post("/v1/runs", json={"definition": job("vars"), "vars": {key: "v1."}}), 422)
        assert "v1." not in message, message
    assert expect(service.admin.get("/v1/runs"), 200)["runs"] == []


def test_a_token_reaches_only_its_prefixes_and_no_endpoint_the_service_does_not_allow(service, small, tmp_path):
    root = tmp_path.resolve()
    api = service.admin
    # Another team's committed output, and their model.
    victim = submit(api, {"definition": job("victim", sink="victim/out")})
    assert wait_run(api, victim["id"])["state"] == "succeeded"
    committed = read_output(root / "victim" / "out")
    (root / "mine" / "in").mkdir(parents=True)
    pq.write_table(small, root / "mine" / "in" / "part-0.parquet")
    # A link inside the prefix that leads out of it counts where it leads.
    (root / "mine" / "link").symlink_to(root / "small")
    token = expect(api.post("/v1/tokens", json={"name": "mine", "role": "submit", "jobs": ["mine"], "prefixes": [str(root / "mine")], "inline": True}), 201)
    assert token["prefixes"] == [str(root / "mine")]
    mine = service.api(token["token"])

    def refused(definition, field):
        message = expect_error(mine.post("/v1/runs", json={"definition": definition}), 403)
        assert field in message and "outside the prefixes" in message, message

    inside = 'name = "mine"\n[source]\nuri = "{src}"\n{steps}[sink]\nuri = "{out}"\nmode = "overwrite"\n'
    refused(inside.format(src="small", steps="", out="mine/out"), "source.uri")
    refused(inside.format(src="mine/link", steps="", out="mine/out"), "source.uri")
    refused(inside.format(src="mine/in", steps="", out="victim/out"), "sink.uri")
    refused(inside.format(src="mine/in", steps="", out="mine/../victim/out"), "sink.uri")
    # Past what exists, '..' does not parse: refused as a bad URI.
    message = expect_error(mine.post("/v1/runs", json={"definition": inside.format(src="mine/in", steps="", out="mine/new/../../victim/out")}), 422)
    assert "sink" in message and ".." in message, message
    score = '[[step]]\nop = "score"\nmodel = "victim/model.onnx"\ninputs = { x = ["x"] }\noutputs = { y = "y" }\n'
    refused(inside.format(src="mine/in", steps=score, out="mine/out"), "step 1 (score)")
    refused('fitted = "victim/out"\n' + inside.format(src="mine/in", steps="", out="mine/out"), "fitted")
    # What the token grants runs.
    run = submit(mine, {"definition": inside.format(src="mine/in", steps="", out="mine/out")})
    assert wait_run(api, run["id"])["state"] == "succeeded"
    assert read_output(root / "mine" / "out").num_rows == small.num_rows
    assert read_output(root / "victim" / "out").equals(committed)

    # The service's state folder, whoever asks.
    message = expect_error(api.post("/v1/runs", json={"definition": job("state", sink="state/runs/x")}), 403)
    assert "state folder" in message, message

    # An endpoint the service does not allow: refused before any request leaves.
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    s3 = f'name = "mine"\n[storage]\nendpoint = "http://127.0.0.1:{port}"\n[source]\nuri = "s3://bucket/in/"\n[sink]\nuri = "s3://bucket/out/"\n'
    message = expect_error(mine.post("/v1/runs", json={"definition": s3}), 403)
    assert "storage.endpoint" in message and "not an endpoint this service may contact" in message, message
    with pytest.raises(socket.timeout):
        listener.accept()
    listener.close()
    healthy(service)


def test_a_client_that_stops_in_its_headers_or_its_body_is_cut_off(service):
    import socket

    host, port = service.host.rsplit(":", 1)

    def cut_off(request: bytes):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(request)
        sock.settimeout(40)
        started = time.monotonic()
        reply = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        sock.close()
        return time.monotonic() - started, reply

    header_only = f"GET /v1/runs HTTP/1.1\r\nHost: {service.host}\r\n".encode()
    dripped_body = (
        f"POST /v1/runs HTTP/1.1\r\nHost: {service.host}\r\nAuthorization: Bearer {service.token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"job\""
    ).encode()
    with ThreadPoolExecutor(2) as pool:
        header, body = pool.map(cut_off, [header_only, dripped_body])
        healthy(service)  # answered while both are held
    # Cut off after the 10 s read timeout (not at once, and not never).
    assert 9 < header[0] < 30 and header[1] == b"", header
    assert 9 < body[0] < 30 and body[1].startswith(b"HTTP/1.1 408"), body
    assert b"did not arrive within 10 s" in body[1]
    healthy(service)


NIGHTLY = """name = "nightly"
[schedule]
cron = "0 2 * * *"
[source]
uri = "small"
[sink]
uri = "out/nightly/{{ds}}"
mode = "overwrite"
"""


def test_keys_are_per_job_and_backfills_leave_the_schedules_future_alone(tmp_path, small):
    root = tmp_path.resolve()
    clock = root / "clock"
    clock.write_text("2026-03-10T01:00:00Z")
    service = Service(root, ["--clock-file", "clock"]).start()
    try:
        api = service.admin
        expect(api.post("/v1/jobs", json={"definition": NIGHTLY}), 201)
        token = expect(api.post("/v1/tokens", json={"name": "mine", "role": "submit", "jobs": ["mine"], "inline": True}), 201)["token"]
        mine = service.api(token)
        # Without the inline grant, a token submits stored jobs by name only.
        stored_only = service.api(expect(api.post("/v1/tokens", json={"name": "stored", "role": "submit", "jobs": ["nightly"]}), 201)["token"])
        message = expect_error(stored_only.post("/v1/runs", json={"definition": NIGHTLY}), 403)
        assert "may not submit an inline definition" in message and "--inline" in message, message
        by_name = submit(stored_only, {"job": "nightly", "vars": {"ds": "2026-03-07"}})
        assert by_name["submitted_by"] == "stored" and by_name["job"] == "nightly"
        tick = "2026-03-10T02:00:00Z"  # covers 9 March
        taken = submit(mine, {"definition": job("mine"), "idempotency_key": f"schedule/nightly/{tick}"})
        assert taken["job"] == "mine" and taken["idempotency_key"] == f"job/mine/schedule/nightly/{tick}"

        # 9 March's interval ends at the tick, an hour away: a backfill may not take it.
        message = expect_error(api.post("/v1/jobs/nightly/backfill", json={"from": "2026-03-08", "to": "2026-03-09"}), 422)
        assert "interval of 2026-03-09 has not ended" in message and tick in message, message
        assert expect(api.post("/v1/jobs/nightly/backfill", json={"from": "2026-03-08", "to": "2026-03-08"}), 201)["runs"] == 1

        clock.write_text("2026-03-10T02:00:30Z")
        deadline = time.time() + 60
        while True:
            runs = expect(api.get("/v1/runs", params={"job": "nightly"}), 200)["runs"]
            scheduled = [r for r in runs if r["idempotency_key"] == f"schedule/nightly/{tick}"]
            if scheduled:
                break
            assert time.time() < deadline, f"the tick did not run: {runs}"
            time.sleep(0.2)
        assert scheduled[0]["vars"]["ds"] == "2026-03-09"
        assert wait_run(api, scheduled[0]["id"])["state"] == "succeeded"
        assert pq.read_table(root / "out/nightly/2026-03-09").num_rows == small.num_rows
        healthy(service)
    finally:
        service.close()


def test_a_closed_pipe_ends_quietly(weir, small, tmp_path):
    path = write_job(tmp_path / "job.toml", job("piped", expr="x >= 0", sink=str(tmp_path / "out")))
    weir("run", path, cwd=tmp_path, check=0)
    for args in [["ls", "--json", tmp_path / "out"], ["head", tmp_path / "out", "-n", "1000"], ["schema", tmp_path / "out"]]:
        read, write = os.pipe()
        os.close(read)  # nobody reads: the first write fails with EPIPE
        proc = subprocess.run([str(WEIR_BIN), *map(str, args)], stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
        os.close(write)
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.returncode, proc.stderr)
