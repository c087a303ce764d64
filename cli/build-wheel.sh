#!/usr/bin/env bash
# Builds the `weir` command as a Python wheel (cli/pyproject.toml, maturin's `bin` bindings)
# into dist/. `pip install dist/weir-*.whl` puts `weir` on the PATH of the environment it
# installs into and pulls in the `onnxruntime` wheel, where `weir` finds ONNX Runtime without
# ORT_DYLIB_PATH. The wheel holds only the binary (Linux, x86-64 or whatever this machine is).
#
#     cli/build-wheel.sh                # release build, into dist/
#     cli/build-wheel.sh --dev          # the debug build with failpoints, which tests/run.sh
#                                       # has already built: no recompilation, seconds
#     cli/build-wheel.sh --out DIR      # into DIR instead of dist/
#
# It sits in cli/ beside the pyproject.toml it builds: the wheel is the `weir` crate's
# package (clients/ holds libraries that talk to Weir, deploy/ the container image).
# maturin, pinned, is installed into ./.venv, the project's virtual environment (made here
# when missing, as tests/run.sh does). Both builds use the one target/ folder and cargo's
# own profiles, so they reuse what `cargo build` compiled; maturin only packs the binary.
#
# The release wheel's binary has no debug information: rustc's `-C strip=debuginfo` on the
# `weir` binary alone (its dependencies are not rebuilt; function names stay for
# backtraces), about 70 MB instead of 330 MB. That relinks target/release/weir without debug
# information; the next `cargo build --release` relinks it with. The workspace's release
# profile is unchanged. The --dev wheel keeps the debug binary as it is, so target/debug/weir
# is not relinked under the end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

MATURIN_VERSION=1.16.0
out=dist
profile=(--release)
rustc_flags=(-C strip=debuginfo)
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) profile=(--profile dev --features failpoints); rustc_flags=() ;;
    --out) out="$2"; shift ;;
    *) echo "usage: cli/build-wheel.sh [--dev] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ "$(.venv/bin/maturin --version 2>/dev/null)" != "maturin $MATURIN_VERSION" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "maturin==$MATURIN_VERSION"
fi
.venv/bin/maturin build --manifest-path cli/Cargo.toml "${profile[@]}" --out "$out" -- "${rustc_flags[@]}"
