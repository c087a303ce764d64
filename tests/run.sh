#!/usr/bin/env bash
# Sets up and runs every test of Weir: the Rust unit tests, then the end-to-end tests of the
# `weir` binary against pyarrow (installed, with the other references, in ./.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

cargo build --bin weir
cargo test --workspace
.venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider "$@"
