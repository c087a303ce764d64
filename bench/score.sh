#!/usr/bin/env bash
# Scoring throughput: Weir's `score` step against onnxruntime's Python API, on the same MLP
# (bench/score_setup.py), batch size 8192, one ONNX Runtime thread per worker.
#   bench/score.sh [ROWS] [WEIR_BIN]   (default 2000000 rows, target/release/weir; needs ./.venv)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-2000000}
weir=${2:-target/release/weir}
dir=bench/data/score-$rows
[ -f "$dir/mlp.onnx" ] || .venv/bin/python bench/score_setup.py "$rows" "$dir"
job=$dir/job.toml
cat > "$job" <<TOML
name = "bench-score"
[source]
uri = "$dir/data"
[[step]]
op = "score"
model = "$dir/mlp.onnx"
inputs = { x = ["f_*"] }
outputs = { probabilities = "p" }
batch_size = 8192
intra_op_threads = 1
[sink]
uri = "$dir/out-weir"
mode = "overwrite"
TOML
t() { /usr/bin/time -f "%e s wall, %M KiB peak RSS" "$@"; }
echo "== onnxruntime Python, model only (rows already in memory)"; t .venv/bin/python bench/score_python.py "$dir" --model-only
echo "== onnxruntime Python + pyarrow, read → score → write";      t .venv/bin/python bench/score_python.py "$dir"
echo "== weir, 1 worker";                                          t "$weir" run "$job" --workers 1 --quiet
echo "== weir, 2 workers";                                         t "$weir" run "$job" --workers 2 --quiet
