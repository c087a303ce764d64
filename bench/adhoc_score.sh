#!/usr/bin/env bash
# One command for the ad-hoc scoring benchmark (bench/adhoc_score.py: score 10M rows with
# Weir, the floor, pyarrow + onnxruntime, DuckDB + onnxruntime and Daft, interleaved, checked
# against each other). Installs the peers into their own venv (bench/.venv-peers, shared with
# bench/peers.sh, same pins), then runs bench/adhoc_score.py with the given arguments.
# Builds nothing: it uses target/release/weir (and target/release/weir-bench-floor when
# present); needs ./.venv from tests/run.sh.
#
#   bench/adhoc_score.sh                          10M rows, 3 repetitions, every system
#   bench/adhoc_score.sh --rows 1000000 --reps 1  a quick check
#   bench/adhoc_score.sh --baseline-weir OLD_BIN  adds another Weir build as a system
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x bench/.venv-peers/bin/python ]; then
  python3 -m venv bench/.venv-peers
fi
# The packages the ad-hoc peers use, pinned as in bench/peers.sh's install line (keep the two
# in step: both benchmarks share this venv).
bench/.venv-peers/bin/pip install --quiet --disable-pip-version-check \
  daft==0.7.26 duckdb==2.0.1 numpy==2.3.4 pyarrow==21.0.0 onnxruntime==1.31.1
exec .venv/bin/python bench/adhoc_score.py "$@"
