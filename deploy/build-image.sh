#!/usr/bin/env bash
# Builds Weir's runtime image (deploy/Dockerfile): a release build of the weir binary and the
# ONNX Runtime library from the onnxruntime wheel, in a temporary build context.
#
#     deploy/build-image.sh [TAG] [--build-arg BASE=IMAGE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-weir:latest}"
shift || true

cargo build --release --bin weir
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp target/release/weir "$context/weir"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "onnxruntime==1.31.1"
library="$(.venv/bin/python -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[-1])')"
cp "$library" "$context/libonnxruntime.so"
cp deploy/Dockerfile "$context/Dockerfile"
docker build --tag "$tag" "$@" "$context"
echo "built $tag"
