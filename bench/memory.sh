#!/usr/bin/env bash
# Peak RSS of `weir run` on the same job over 1M, 3M, 10M and 30M rows (bench/gen_data.py
# data; the 3M and 30M inputs list the 1M and 10M files three times, through symlinks, to
# save disk). Streaming with bounded memory means the peak stops growing once the first
# few row groups have passed.
#   bench/memory.sh [WEIR_BIN]      (default target/release/weir; needs ./.venv from tests/run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
weir=${1:-target/release/weir}
for rows in 1000000 10000000; do
  [ -d "bench/data/rows-$rows" ] || .venv/bin/python bench/gen_data.py "$rows" "bench/data/rows-$rows" --files 4
  tripled=bench/data/rows-$((rows * 3))
  if [ ! -d "$tripled" ]; then
    mkdir -p "$tripled"
    for copy in a b c; do
      for file in "bench/data/rows-$rows"/*.parquet; do ln -s "../rows-$rows/$(basename "$file")" "$tripled/$copy-$(basename "$file")"; done
    done
  fi
done
for rows in 1000000 3000000 10000000 30000000; do
  job=$(mktemp --suffix=.toml)
  cat > "$job" <<TOML
name = "memory-$rows"
[source]
uri = "bench/data/rows-$rows"
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
