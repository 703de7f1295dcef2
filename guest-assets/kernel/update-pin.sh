#!/usr/bin/env bash
# Pins the newest Debian 12 (bookworm) generic amd64 kernel that apt offers:
# resolves linux-image-amd64 to its versioned package, downloads it into the
# cache and writes package, version and sha256 into kernel.pin.
#   update-pin.sh [cache dir]   (default /var/cache/coco/kernel)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-/var/cache/coco/kernel}
# The bookworm candidate, not backports or sid (those are pinned low on purpose).
meta_version=$(apt-cache policy linux-image-amd64 | awk '/Candidate:/ {print $2}')
[ -n "$meta_version" ] && [ "$meta_version" != "(none)" ] || { echo "update-pin: apt knows no linux-image-amd64; run apt-get update" >&2; exit 1; }
pkg=$(apt-cache show "linux-image-amd64=$meta_version" | sed -n 's/^Depends: \(linux-image-[^ ,]*-amd64\).*/\1/p' | head -1)
[ -n "$pkg" ] || { echo "update-pin: cannot tell which kernel linux-image-amd64=$meta_version depends on" >&2; exit 1; }
version=$(apt-cache show "linux-image-amd64=$meta_version" | sed -n 's/^Depends: [^(]*(= \([^)]*\)).*/\1/p' | head -1)
mkdir -p "$cache"
(cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" >&2)
sha=$(sha256sum "$cache/${pkg}_${version}_amd64.deb" | cut -d' ' -f1)
# apt verified the download against the signed archive index; record that hash.
want=$(apt-cache show "$pkg=$version" | sed -n 's/^SHA256: //p' | head -1)
[ "$sha" = "$want" ] || { echo "update-pin: downloaded sha256 $sha differs from the archive index ($want)" >&2; exit 1; }
sed -i -e "s/^package=.*/package=$pkg/" -e "s/^version=.*/version=$version/" -e "s/^sha256=.*/sha256=$sha/" "$here/kernel.pin"
echo "update-pin: pinned $pkg $version ($sha)"
