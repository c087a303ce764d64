#!/usr/bin/env bash
# Builds Weir's runtime image (deploy/Dockerfile): a release build of the weir binary and the
# ONNX Runtime library from the onnxruntime wheel, in a temporary build context. The image
# gets the binary without its debug information (about 70 MB instead of 330 MB); that goes
# to target/release/weir.debug, linked from the binary by name, to symbolize a crash report.
#
#     deploy/build-image.sh [TAG] [--build-arg BASE=IMAGE ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-weir:latest}"
shift || true

cargo build --release --bin weir
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
objcopy --only-keep-debug target/release/weir target/release/weir.debug
objcopy --strip-debug --add-gnu-debuglink=target/release/weir.debug target/release/weir "$context/weir"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "onnxruntime==1.31.1"
library="$(.venv/bin/python -c 'import glob, os, onnxruntime; print(sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*")))[-1])')"
cp "$library" "$context/libonnxruntime.so"
cp deploy/Dockerfile "$context/Dockerfile"
docker build --tag "$tag" "$@" "$context"
echo "built $tag"
