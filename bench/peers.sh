#!/usr/bin/env bash
# One command for the peers benchmark: builds Weir (release), installs the peers into a venv
# of their own (bench/.venv-peers), then runs bench/peers.py with the given arguments
# (default: size S, 3 interleaved repetitions), and draws results/peers-SIZE.png. Needs ./.venv from tests/run.sh, and Java 17+
# for PySpark.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin weir --bin weir-bench-floor
if [ ! -x bench/.venv-peers/bin/python ]; then
  python3 -m venv bench/.venv-peers
fi
bench/.venv-peers/bin/pip install --quiet --disable-pip-version-check \
  daft==0.7.26 pyspark==4.3.0 "ray[data]==2.52.0" matplotlib==3.10.7 pandas==2.3.3 numpy==2.3.4 pyarrow==21.0.0 onnxruntime==1.31.1
.venv/bin/python bench/peers.py "$@"
size=S
for ((i = 1; i <= $#; i++)); do [ "${!i}" = "--size" ] && { j=$((i + 1)); size=${!j}; }; done
bench/.venv-peers/bin/python bench/peers_chart.py "$size"
