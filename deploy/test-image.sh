#!/usr/bin/env bash
# The image test (too slow for every CI run: a Debian base made with debootstrap, a release
# build, an image build). Run as root on a machine with Debian's packages reachable:
#
#     deploy/test-image.sh
#
# 1. Installs docker.io and debootstrap from Debian's packages when absent, and starts
#    dockerd when no daemon answers.
# 2. Makes the base image locally (no registry needed): debootstrap bookworm into a folder,
#    `docker import` it as weir-base:bookworm (kept for later runs).
# 3. Builds weir:test with deploy/build-image.sh on that base.
# 4. Runs the demo job and a scoring job in the container, as its non-root user, and checks
#    with pyarrow that their outputs equal the host binary's (tests/e2e/image_check.py).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "deploy/test-image.sh: run as root (it installs packages and starts dockerd)" >&2
  exit 2
fi
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  (dockerd >/tmp/weir-dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null
fi
if ! docker image inspect weir-base:bookworm >/dev/null 2>&1; then
  rootfs="$(mktemp -d)"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
  tar -C "$rootfs" -c . | docker import - weir-base:bookworm
  rm -rf "$rootfs"
fi
deploy/build-image.sh weir:test --build-arg BASE=weir-base:bookworm
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
.venv/bin/python tests/e2e/image_check.py weir:test target/release/weir
