#!/usr/bin/env bash
# Peak RSS of `weir run` on the same job over 1M and 10M rows (bench/gen_data.py data):
# streaming with bounded memory means the second should stay close to the first.
#   bench/memory.sh [WEIR_BIN]      (default target/release/weir; needs ./.venv from tests/run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
weir=${1:-target/release/weir}
for rows in 1000000 10000000; do
  data=bench/data/rows-$rows
  [ -d "$data" ] || .venv/bin/python bench/gen_data.py "$rows" "$data" --files 4
  job=$(mktemp --suffix=.toml)
  cat > "$job" <<TOML
name = "memory-$rows"
[source]
uri = "$data"
[[step]]
op = "cast"
columns = { "f_*" = "float32" }
[[step]]
op = "drop_nulls"
columns = ["f_00", "f_01"]
[sink]
uri = "bench/data/out-$rows"
mode = "overwrite"
TOML
  /usr/bin/time -f "$rows rows: %e s wall, %M KiB peak RSS" "$weir" run "$job" --workers 2 --quiet
  rm -f "$job"
done
