#!/usr/bin/env bash
# Sets up and runs every test of Weir: the Rust unit tests, then the end-to-end tests of the
# `weir` binary against pyarrow, scikit-learn, pandas, boto3 and Polars (installed in ./.venv),
# some of them against a real S3-compatible server, Garage, which the tests start themselves
# (installed here into ~/.cargo/bin once: about 8 minutes on 2 cores, then cached).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt

GARAGE_VERSION=2.5.0
if ! command -v garage >/dev/null && [ ! -x "$HOME/.cargo/bin/garage" ]; then
  cargo install garage --locked --version "$GARAGE_VERSION"
fi

cargo build --bin weir
cargo test --workspace
.venv/bin/python -m pytest tests/e2e -q -p no:cacheprovider "$@"
