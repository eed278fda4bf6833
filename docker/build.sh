#!/usr/bin/env bash
# Build the project image with docker or podman, whichever is installed (`make image`).
#
#   docker/build.sh [TAG]     (default: localhost/fakeface:<version>; env BASE_IMAGE, BAKE_WEIGHTS,
#                              NO_CACHE=1 to rebuild every layer)
#
# With podman, docker/containers.conf is used (runc, cgroupfs, rlimits this kind of machine
# allows), and the host's CA certificates are mounted read-only into the build, so pip trusts a
# TLS-intercepting proxy the host trusts, without the certificate ending up in the image.
set -euo pipefail
cd "$(dirname "$0")/.."
version="$(python3 -c 'import tomllib;print(tomllib.load(open("pyproject.toml","rb"))["project"]["version"])')"
tag="${1:-localhost/fakeface:${version}}"
args=(--build-arg "GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)")
[ -n "${BASE_IMAGE:-}" ] && args+=(--build-arg "BASE_IMAGE=${BASE_IMAGE}")
[ -n "${BAKE_WEIGHTS:-}" ] && args+=(--build-arg "BAKE_WEIGHTS=${BAKE_WEIGHTS}")
[ -n "${NO_CACHE:-}" ] && args+=(--no-cache)
if command -v podman >/dev/null; then
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/docker/containers.conf}"
  certs=/etc/ssl/certs
  [ -f "$certs/ca-certificates.crt" ] && args+=(-v "$certs:$certs:ro" --build-arg "BUILD_CA_BUNDLE=$certs/ca-certificates.crt")
  exec podman build --format docker "${args[@]}" -t "$tag" .
elif command -v docker >/dev/null; then
  exec docker build "${args[@]}" -t "$tag" .
fi
echo "build.sh: neither podman nor docker is installed" >&2
exit 2
