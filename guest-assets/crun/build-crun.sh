#!/usr/bin/env bash
# Builds the pinned crun release static (glibc, libseccomp, libcap, yajl;
# no systemd, no CRIU) and caches the stripped binary. Copies it to <out>.
#   build-crun.sh <pin file> <cache dir> <out>
#
# Why crun and not runc: runc is a Go program that runs three times per
# container start (create, its re-executed init, start) and twice per exec;
# under TCG each Go start costs ~0.3-0.5 s of guest CPU. crun is C.
set -euo pipefail

pin=$1 cache=$2 out=$3
field() { sed -n "s/^$1=//p" "$pin"; }
pkg=$(field package) version=$(field version) suite=$(field suite) orig=$(field orig) sha=$(field sha256)
if [ -z "$pkg" ] || [ -z "$version" ] || [ -z "$suite" ] || [ -z "$orig" ] || [ ${#sha} != 64 ]; then
	echo "build-crun: $pin must set package=, version=, suite=, orig= and sha256= (64 hex digits)" >&2
	exit 1
fi
# The binary depends on the source and on how it is built (this script).
key=$(cat "$pin" "$0" | sha256sum | cut -c1-12)
cached="$cache/crun-$version-$key"
mkdir -p "$cache"

if [ ! -x "$cached" ]; then
	for lib in libseccomp.a libcap.a libyajl_s.a; do
		[ -f "/usr/lib/x86_64-linux-gnu/$lib" ] || { echo "build-crun: /usr/lib/x86_64-linux-gnu/$lib missing: run scripts/install-deps.sh (libseccomp-dev, libcap-dev, libyajl-dev)" >&2; exit 1; }
	done
	tarball="$cache/$orig"
	if [ ! -f "$tarball" ] || [ "$(sha256sum "$tarball" | cut -d' ' -f1)" != "$sha" ]; then
		echo "build-crun: downloading the $pkg $version source from Debian $suite" >&2
		# A private source list for the pinned suite, on the mirror this
		# machine is already configured with; the system's lists stay as they are.
		apt_dir=$(mktemp -d)
		trap 'rm -rf "$apt_dir"' EXIT
		mirror="$("$(dirname "$0")/../../scripts/debian-mirror.sh")" || { echo "build-crun: cannot fetch the source" >&2; exit 1; }
		mkdir -p "$apt_dir/lists/partial" "$apt_dir/parts" "$apt_dir/dl"
		echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$apt_dir/parts/crun-src.list"
		aptopts=(-q -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$apt_dir/parts"
			-o Dir::State::Lists="$apt_dir/lists" -o APT::Sandbox::User=root)
		apt-get "${aptopts[@]}" update >&2
		# --tar-only: the upstream tarball is all we build from.
		(cd "$apt_dir/dl" && apt-get "${aptopts[@]}" source --download-only --tar-only "$pkg" >&2) || true
		if [ ! -f "$apt_dir/dl/$orig" ]; then
			echo "build-crun: Debian $suite no longer carries $orig (it has: $(ls "$apt_dir/dl" | tr '\n' ' ')); re-pin $pin to a suite and version it has" >&2
			exit 1
		fi
		got=$(sha256sum "$apt_dir/dl/$orig" | cut -d' ' -f1)
		if [ "$got" != "$sha" ]; then
			echo "build-crun: sha256 mismatch for $orig: pinned $sha, downloaded $got" >&2
			exit 1
		fi
		mv -f "$apt_dir/dl/$orig" "$tarball"
	fi

	echo "build-crun: building crun $version (static)" >&2
	work=$(mktemp -d "$cache/build.XXXXXX")
	trap 'rm -rf "$work" ${apt_dir:+"$apt_dir"}' EXIT
	tar -xzf "$tarball" -C "$work"
	src="$work/$pkg-$version"
	# Debian ships yajl's static library as libyajl_s.a; configure looks for -lyajl.
	mkdir -p "$work/lib" && ln -s /usr/lib/x86_64-linux-gnu/libyajl_s.a "$work/lib/libyajl.a"
	(
		cd "$src"
		./configure -q --disable-systemd --disable-criu --disable-shared --enable-static \
			CFLAGS="-O2 -ffile-prefix-map=$src=." LDFLAGS="-static -L$work/lib" >"$work/configure.log" 2>&1 ||
			{ tail -20 "$work/configure.log" >&2; exit 1; }
		# The generated headers first: `make crun` alone does not make them.
		{ make -s .version git-version.h && make -s -j"$(nproc)" crun LDFLAGS="-all-static -L$work/lib"; } >"$work/make.log" 2>&1 ||
			{ tail -30 "$work/make.log" >&2; exit 1; }
	)
	strip "$src/crun"
	if readelf -l "$src/crun" | grep -q INTERP; then
		echo "build-crun: $src/crun is not statically linked" >&2
		exit 1
	fi
	mv -f "$src/crun" "$cached.tmp" && mv -f "$cached.tmp" "$cached"
fi
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$(dirname "$out")/.crun.XXXXXX")
cp "$cached" "$tmp" && chmod 0755 "$tmp" && mv -f "$tmp" "$out"
echo "$(sha256sum "$out" | cut -d' ' -f1)  $out (crun $version, $(stat -c %s "$out") bytes)"
