#!/usr/bin/env bash
# Sets up and runs every test of Weir: the Rust unit tests, then the end-to-end tests of the
# `weir` binary against pyarrow, scikit-learn, pandas, boto3 and Polars (installed in ./.venv),
# some of them against a real S3-compatible server, Garage, which the tests start themselves
# (installed here into ~/.cargo/bin once: about 8 minutes on 2 cores, then cached). The fuzz
# harness (tests/fuzz) runs for a bounded time between the two.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
# The Python client (clients/python), which tests/e2e/test_python_client.py tests; it is
# fully typed: mypy --strict must pass (checked here, before the long builds).
.venv/bin/python -m pip install --quiet --disable-pip-version-check ./clients/python
.venv/bin/python -m mypy --strict clients/python/weir_client

GARAGE_VERSION=2.5.0
if ! command -v garage >/dev/null && [ ! -x "$HOME/.cargo/bin/garage" ]; then
  cargo install garage --locked --version "$GARAGE_VERSION"
fi

# A real browser for the dashboard's test: Debian's headless Chromium, installed when we
# may (as root, with apt); elsewhere that one test is skipped.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
# The multi-host tests make network namespaces with iproute2's `ip` (as root); elsewhere
# they are skipped.
if ! command -v ip >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi

cargo build --bin weir --features weir/failpoints
cargo test --workspace
# Fuzzing, bounded: each target (job loader, filter language, Parquet reader) for
# WEIR_FUZZ_SECONDS (default 60); any panic, abort or hang fails the run. Under an 8 GiB
# address-space limit, so that a runaway allocation aborts instead of swapping.
(ulimit -v 8388608 && cargo run --quiet -p weir-fuzz -- all --seconds "${WEIR_FUZZ_SECONDS:-60}")
.venv/bin/python -m pytest tests/e2e -q -rs -p no:cacheprovider "$@"
