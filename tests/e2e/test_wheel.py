"""The `weir` wheel (cli/pyproject.toml): built by its script, cli/build-wheel.sh, installed by
pip into a fresh virtual environment, where `weir` is on the PATH and finds ONNX Runtime in
the `onnxruntime` wheel pip installed beside it, with no ORT_DYLIB_PATH and no `.venv`
around. The README's demo and its scoring job then give the same output as the cargo-built
binary, and the same scores as onnxruntime's Python API.

The wheel is the `--dev` one: the debug build with failpoints that tests/run.sh has already
made, packed without recompiling (about 5 s; a release wheel needs a release build, which
CI does not make). cli/build-wheel.sh installs its pinned maturin into ./.venv when it is
missing. pip installs the wheel's dependencies at tests/requirements.txt's pins, from PyPI
or pip's cache (about 10 s)."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import REPO, read_output
from helpers import onnx_reference

DEMO_FILES = ["job.toml", "score.toml", "churn.onnx", "data"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The dev wheel, and a fresh virtual environment (not named `.venv`) it is installed in."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [str(REPO / "cli" / "build-wheel.sh"), "--dev", "--out", str(root / "dist")], capture_output=True, text=True, timeout=600
    )
    assert build.returncode == 0, f"cli/build-wheel.sh --dev failed:\n{build.stdout}\n{build.stderr}"
    (wheel,) = (root / "dist").glob("weir-*.whl")
    venv = root / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + ["-c", str(REPO / "tests" / "requirements.txt"), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, f"pip install {wheel.name} failed:\n{pip.stdout}\n{pip.stderr}"
    yield wheel, venv
    shutil.rmtree(root)


def demo_copy(folder: Path) -> Path:
    """The demo's jobs, model and data in `folder`: their outputs go there, not into demo/."""
    folder.mkdir()
    for name in DEMO_FILES:
        source = REPO / "demo" / name
        (shutil.copytree if source.is_dir() else shutil.copy)(source, folder / name)
    return folder


def run(args, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(map(str, args))} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_the_wheel_holds_only_the_binary_and_requires_onnxruntime(installed):
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    (binary,) = [n for n in names if ".dist-info/" not in n]
    assert binary.endswith(".data/scripts/weir"), names
    assert "Requires-Dist: onnxruntime>=1.31" in metadata


def test_the_installed_weir_scores_the_demo_like_the_cargo_built_binary(installed, weir, tmp_path):
    _, venv = installed
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DYLIB_PATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    exe = shutil.which("weir", path=env["PATH"])
    assert exe is not None and Path(exe) == venv / "bin" / "weir", exe
    # Nothing else Weir looks in may hold ONNX Runtime: only the environment's prefix does.
    for where in (tmp_path, venv / "bin"):
        assert not any((d / ".venv").exists() for d in where.resolve().parents), f"a .venv above {where}"
    assert not any(Path(d, "libonnxruntime.so").exists() for d in ("/usr/local/lib", "/usr/lib"))

    wheel_demo, cargo_demo = demo_copy(tmp_path / "wheel-demo"), demo_copy(tmp_path / "cargo-demo")
    for job in ("job.toml", "score.toml"):
        run(["weir", "run", wheel_demo / job, "--quiet"], cwd=tmp_path, env=env)
        weir("run", cargo_demo / job, "--quiet", check=0)

    for output in ("output", "scored"):
        got, want = read_output(wheel_demo / output).sort_by("id"), read_output(cargo_demo / output).sort_by("id")
        assert got.num_rows > 60_000
        assert got.equals(want), f"{output}: the wheel's weir and target/debug/weir differ"
    scored = read_output(wheel_demo / "scored").sort_by("id")
    x = np.column_stack([scored.column(c).to_numpy() for c in ("age", "income", "tenure_months")])
    expected = onnx_reference(REPO / "demo" / "churn.onnx", x)["p"][:, 0]
    np.testing.assert_allclose(scored.column("churn_probability").to_numpy(), expected, rtol=1e-6, atol=1e-7)
    assert scored.schema.field("churn_probability").type == pa.float32()

    # The same binary outside the environment's prefix (a hard link) does not find it.
    elsewhere = tmp_path / "elsewhere" / "bin"
    elsewhere.mkdir(parents=True)
    os.link(venv / "bin" / "weir", elsewhere / "weir")
    try:
        proc = subprocess.run(
            [str(elsewhere / "weir"), "run", str(wheel_demo / "score.toml")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        (elsewhere / "weir").unlink()  # pytest keeps its last temporary folders; not a 150 MB binary
    assert proc.returncode == 2 and "ONNX Runtime (libonnxruntime.so, 1.31 or newer) was not found" in proc.stderr, proc.stderr
