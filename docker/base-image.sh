#!/usr/bin/env bash
# A Python 3.11 base image made from Debian's own packages, for machines that can reach Debian's
# and Python's package indexes but no container registry (CI here): mmdebstrap builds a minimal
# bookworm root file system, podman imports it. Idempotent: an existing image is kept.
#
#   docker/base-image.sh [IMAGE]          (default localhost/fakeface-base:bookworm)
set -euo pipefail
image="${1:-localhost/fakeface-base:bookworm}"
engine="$(command -v podman || command -v docker || true)"
[ -n "$engine" ] || { echo "base-image.sh: neither podman nor docker is installed" >&2; exit 2; }
if "$engine" image exists "$image" 2>/dev/null || "$engine" image inspect "$image" >/dev/null 2>&1; then
  echo "base image $image exists"
  exit 0
fi
command -v mmdebstrap >/dev/null || { echo "base-image.sh: mmdebstrap is not installed (apt install mmdebstrap)" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$work/base.tar"
"$engine" import --change 'CMD ["python3"]' "$work/base.tar" "$image" >/dev/null
echo "base image $image built from Debian bookworm"
