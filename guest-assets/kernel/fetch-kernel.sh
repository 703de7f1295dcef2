#!/usr/bin/env bash
# Fetches the pinned Debian kernel package into the cache, verifies its
# sha256 and unpacks it once. Prints the unpacked root directory on stdout.
#   fetch-kernel.sh <pin file> <cache dir>
set -euo pipefail

pin=$1 cache=$2
field() { sed -n "s/^$1=//p" "$pin"; }
pkg=$(field package) version=$(field version) sha=$(field sha256)
if [ -z "$pkg" ] || [ -z "$version" ] || [ ${#sha} != 64 ]; then
	echo "fetch-kernel: $pin must set package=, version= and sha256= (64 hex digits); regenerate it with guest-assets/kernel/update-pin.sh" >&2
	exit 1
fi

deb="$cache/${pkg}_${version}_amd64.deb"
mkdir -p "$cache"
if [ ! -f "$deb" ]; then
	echo "fetch-kernel: downloading $pkg=$version" >&2
	# Sandbox::User=root: the cache is root's; apt's _apt user could not write it.
	if ! out=$(cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" 2>&1); then
		echo "$out" >&2
		cat >&2 <<MSG
fetch-kernel: apt cannot download $pkg=$version.
  Run 'apt-get update' and retry. If the archive no longer has this version (Debian keeps only
  the newest kernel of a suite), pin the current one: guest-assets/kernel/update-pin.sh
  (it rewrites $pin; commit that file), or put the .deb at $deb by hand.
MSG
		exit 1
	fi
fi
got=$(sha256sum "$deb" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
	mv -f "$deb" "$deb.rejected"
	cat >&2 <<MSG
fetch-kernel: sha256 mismatch for $deb
  pinned:     $sha
  downloaded: $got
  The file was moved to $deb.rejected. If Debian really rebuilt this version, review the
  change and re-pin with guest-assets/kernel/update-pin.sh; otherwise retry the download.
MSG
	exit 1
fi

# Unpack once per package hash; the directory is complete only once renamed.
dir="$cache/$version-${sha:0:12}"
# A private temporary directory: two builds running at once must not collide.
if [ ! -d "$dir/root" ]; then
	tmp=$(mktemp -d "$cache/unpack.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	dpkg-deb -x "$deb" "$tmp/root"
	mv -T "$tmp" "$dir" 2>/dev/null || [ -d "$dir/root" ] # lost the race: the winner's copy is the same
fi
echo "$dir/root"
