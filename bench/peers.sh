#!/usr/bin/env bash
# One command for the peers benchmark: builds Weir (release), installs the peers into a venv
# of their own (bench/.venv-peers), then runs bench/peers.py with the given arguments
# (default: size S, 3 interleaved repetitions), draws results/peers-SIZE.png and rewrites
# results/scaling.md from every size measured. Needs ./.venv from tests/run.sh, and Java 17+
# for PySpark.
#
#   bench/peers.sh --size all     the committed results: S with every system; M with the
#                                 slow peers (PySpark, Ray Data) run once; L with Weir, the
#                                 best peer (Daft) and the script once (the floor holds the
#                                 whole table in memory, and the slow peers would take hours).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin weir --bin weir-bench-floor
if [ ! -x bench/.venv-peers/bin/python ]; then
  python3 -m venv bench/.venv-peers
fi
bench/.venv-peers/bin/pip install --quiet --disable-pip-version-check \
  daft==0.7.26 pyspark==4.3.0 "ray[data]==2.52.0" matplotlib==3.10.7 pandas==2.3.3 numpy==2.3.4 pyarrow==21.0.0 onnxruntime==1.31.1 duckdb==2.0.1

run_size() {
  .venv/bin/python bench/peers.py --size "$@"
  bench/.venv-peers/bin/python bench/peers_chart.py "$1"
}

if [ "${1:-}" = "--size" ] && [ "${2:-}" = "all" ]; then
  run_size S
  run_size M --once spark,ray
  run_size L --systems floor,weir1,weir2,weir2p,script,daft --once script
else
  size=S
  for ((i = 1; i <= $#; i++)); do [ "${!i}" = "--size" ] && { j=$((i + 1)); size=${!j}; }; done
  .venv/bin/python bench/peers.py "$@"
  bench/.venv-peers/bin/python bench/peers_chart.py "$size"
fi
.venv/bin/python bench/scaling.py
