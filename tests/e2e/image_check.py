"""Run by deploy/test-image.sh (not by pytest): the demo job and a scoring job, once with
the host's binary and once in the image (as its non-root user, reading and writing mounted
folders), and their outputs compared with pyarrow. Exits non-zero on any difference.

    python tests/e2e/image_check.py IMAGE HOST_WEIR
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import SCORE_FEATURES, helper_mlp  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def read(directory: Path) -> pa.Table:
    files = sorted(p for p in directory.glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(p) for p in files])
    key = "id" if "id" in table.column_names else table.column_names[0]
    return table.sort_by(key)


def main():
    image, host_weir = sys.argv[1], str(Path(sys.argv[2]).resolve())
    work = Path(tempfile.mkdtemp(prefix="weir-image-"))
    os.chmod(work, 0o777)
    (work / "data").mkdir()
    for part in (REPO / "demo" / "data").glob("*.parquet"):
        (work / "data" / part.name).write_bytes(part.read_bytes())
    demo = (REPO / "demo" / "job.toml").read_text()
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, len(SCORE_FEATURES)))
    (work / "features").mkdir()
    pq.write_table(pa.table({"id": np.arange(2000), **{n: x[:, i] for i, n in enumerate(SCORE_FEATURES)}}), work / "features" / "part-0.parquet")
    helper_mlp(work / "mlp.onnx")
    score = (
        'name = "score"\n[source]\nuri = "features/"\n[[step]]\nop = "score"\nmodel = "mlp.onnx"\n'
        f'inputs = {{ x = {SCORE_FEATURES!r} }}\noutputs = {{ y = ["y0", "y1", "y2"] }}\n'.replace("'", '"')
        + '[sink]\nuri = "OUT/"\n'
    )
    for name, job in (("demo", demo.replace('uri = "output/"', 'uri = "OUT/"')), ("score", score)):
        for where in ("host", "image"):
            (work / f"{name}-{where}.toml").write_text(job.replace("OUT/", f"out-{name}-{where}/"))
        subprocess.run([host_weir, "run", str(work / f"{name}-host.toml"), "--quiet"], check=True)
        subprocess.run(
            ["docker", "run", "--rm", "-v", f"{work}:/work", "-w", "/work", image, "run", f"/work/{name}-image.toml", "--quiet"],
            check=True,
        )
        host, contained = read(work / f"out-{name}-host"), read(work / f"out-{name}-image")
        if not host.equals(contained):
            sys.exit(f"{name}: the image's output differs from the host binary's")
        print(f"{name}: {host.num_rows} rows, equal in the image and on the host")
    user = subprocess.run(["docker", "run", "--rm", "--entrypoint", "id", image, "-u"], check=True, capture_output=True, text=True)
    if user.stdout.strip() == "0":
        sys.exit("the image runs as root")
    print("the image runs as uid", user.stdout.strip())


if __name__ == "__main__":
    main()
