#!/usr/bin/env bash
# Builds a local base image for machines that reach no image registry: Debian bookworm by
# debootstrap (from the Debian mirror), with Python 3.11 + venv, redis-server (so the same
# image can stand in for the redis service) and this machine's CA bundle (so pip works
# behind a TLS-inspecting proxy during `docker build`). Needs root, debootstrap, Docker.
#
#   tests/compose/build-base.sh [TAG]      # default farm-base:bookworm
set -euo pipefail
tag=${1:-farm-base:bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,redis-server,procps \
    bookworm "$root" "$mirror" >&2
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
# The redis service keeps its append-only file in /data, as the official image does.
chroot "$root" sh -c 'mkdir -p /data && chown redis:redis /data'
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$tag" >&2
echo "$tag"
