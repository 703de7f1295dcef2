#!/usr/bin/env bash
# Builds the coco guest kernel from Debian's kernel source package
# (GUEST_KERNEL=own), reproducibly, and caches the result per source pin,
# config and toolchain.
#
#   build-kernel.sh build  <pin> <cache> <out dir>   vmlinux, vmlinuz, kernel.config, kernel.release into <out dir>
#   build-kernel.sh config <pin> <cache> <config>    regenerates the committed config from config/*.config
#   build-kernel.sh verify <pin> <cache> -           builds again from scratch and compares with the cached build
#
# The config is `make allnoconfig` plus the fragments in config/ (each line
# says why it is there), resolved by Kconfig; the resolved file is committed
# (guest-6.12.config) so a review sees every option, and `build` refuses to
# run when the fragments no longer resolve to it.
set -euo pipefail

mode=$1 pin=$2 cache=$3 out=$4
here=$(cd "$(dirname "$0")" && pwd)
fragments=("$here"/config/*.config)
committed=$here/guest-6.12.config
# Slow on purpose: the build machines' cores are shared with running guests.
JOBS=${KERNEL_JOBS:-2}
NICE=${KERNEL_NICE:-19}

field() { sed -n "s/^$1=//p" "$pin"; }
pkg=$(field package) version=$(field version) sha=$(field sha256)
if [ -z "$pkg" ] || [ -z "$version" ] || [ ${#sha} != 64 ]; then
	echo "build-kernel: $pin must set package=, version= and sha256= (64 hex digits)" >&2
	exit 1
fi
for tool in make gcc bc bison flex lz4 xz dpkg-deb; do
	command -v $tool >/dev/null || { echo "build-kernel: $tool missing: run scripts/install-deps.sh" >&2; exit 1; }
done
for h in /usr/include/libelf.h /usr/include/openssl/opensslv.h; do
	[ -f $h ] || { echo "build-kernel: $h missing: run scripts/install-deps.sh (libelf-dev, libssl-dev)" >&2; exit 1; }
done

# fetch prints the verified .deb (apt-get download, as fetch-kernel.sh).
fetch() {
	local deb="$cache/${pkg}_${version}_all.deb"
	mkdir -p "$cache"
	if [ ! -f "$deb" ]; then
		echo "build-kernel: downloading $pkg=$version (~150 MB)" >&2
		local outp
		if ! outp=$(cd "$cache" && apt-get download -q -o APT::Sandbox::User=root "$pkg=$version" 2>&1); then
			echo "$outp" >&2
			echo "build-kernel: apt cannot download $pkg=$version. Run 'apt-get update' and retry; if bookworm-security no longer has this version, re-pin $pin (see its comments)." >&2
			exit 1
		fi
	fi
	local got
	got=$(sha256sum "$deb" | cut -d' ' -f1)
	if [ "$got" != "$sha" ]; then
		mv -f "$deb" "$deb.rejected"
		echo "build-kernel: sha256 mismatch for $deb: pinned $sha, downloaded $got (moved to $deb.rejected)" >&2
		exit 1
	fi
	echo "$deb"
}

# unpack <deb> <dir>: the source tree, with Debian's patches, into <dir>/src.
unpack() {
	dpkg-deb --fsys-tarfile "$1" | tar -xO "./usr/src/$pkg.tar.xz" | xz -dc | tar -x -C "$2"
	mv "$2/$pkg" "$2/src"
}

# kmake runs the kernel's make with everything that would vary between two
# builds pinned: build date (the Debian package's), user, host, build number.
kmake() {
	KBUILD_BUILD_TIMESTAMP="$stamp" KBUILD_BUILD_USER=coco KBUILD_BUILD_HOST=coco KBUILD_BUILD_VERSION=1 \
		nice -n "$NICE" make -s -C "$src" "$@"
}

# resolve writes the config the fragments give over allnoconfig to $src/.config,
# and fails if Kconfig dropped or changed any value a fragment asks for
# (a dependency missing, or an option renamed in this kernel).
resolve() {
	kmake allnoconfig >/dev/null
	(cd "$src" && scripts/kconfig/merge_config.sh -m .config "${fragments[@]}" >/dev/null)
	kmake olddefconfig >/dev/null
	local bad=0 line opt want got
	while read -r line; do
		case $line in
		CONFIG_*=*) opt=${line%%=*} want=${line#*=} ;;
		"# CONFIG_"*" is not set") opt=${line#\# } opt=${opt%% *} want=n ;;
		*) continue ;;
		esac
		got=$(sed -n "s/^$opt=//p" "$src/.config")
		[ -n "$got" ] || got=n
		if [ "$got" != "$want" ]; then
			echo "build-kernel: $opt: a fragment asks for $want, Kconfig gives $got (a dependency is off, or the option does not exist in $version)" >&2
			bad=1
		fi
	done < <(cat "${fragments[@]}")
	[ $bad = 0 ] || exit 1
}

prepare() {
	work=$(mktemp -d "$cache/work.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	local deb
	deb=$(fetch)
	unpack "$deb" "$work"
	src=$work/src
	# The build date is the Debian upload's (its changelog trailer), the same on every machine.
	stamp=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/share/doc/$pkg/changelog.Debian.gz" | gzip -dc |
		sed -n 's/^ -- .*>  //p')
	stamp=${stamp%%$'\n'*}
	[ -n "$stamp" ] || { echo "build-kernel: no date in $pkg's changelog" >&2; exit 1; }
	resolve
}

# compile builds the kernel from scratch into $work/out.
compile() {
	echo "build-kernel: building $pkg $version ($key) with -j$JOBS at nice $NICE; ~30-60 min on 2 idle cores" >&2
	local start
	start=$(date +%s)
	prepare
	if ! diff -q <(sed 1,2d "$committed") <(grep -v '^# Automatically generated file; DO NOT EDIT.$' "$src/.config") >/dev/null; then
		echo "build-kernel: the fragments in $here/config no longer resolve to $committed; run 'make kernel-config' and commit the result" >&2
		exit 1
	fi
	if grep -q '^CONFIG_MODULES=y' "$src/.config"; then
		echo "build-kernel: CONFIG_MODULES is on; the guest kernel has everything built in" >&2
		exit 1
	fi
	kmake -j"$JOBS" bzImage >"$work/build.log" 2>&1 || { tail -40 "$work/build.log" >&2; exit 1; }
	mkdir -p "$work/out"
	# The ELF the bzImage carries (symbols and .comment stripped): QEMU boots it by its PVH note.
	cp "$src/arch/x86/boot/compressed/vmlinux.bin" "$work/out/vmlinux"
	cp "$src/arch/x86/boot/bzImage" "$work/out/vmlinuz"
	cp "$src/.config" "$work/out/kernel.config"
	kmake -s kernelrelease >"$work/out/kernel.release"
	echo "$(($(date +%s) - start)) s, -j$JOBS, $(nproc) cores, $(date -u +%F)" >"$work/out/build-time"
}

case $mode in
config)
	prepare
	{
		echo "# Generated by guest-assets/kernel/build-kernel.sh config from $pkg $version:"
		echo "# allnoconfig + guest-assets/kernel/config/*.config. Edit the fragments, not this file."
		grep -v '^# Automatically generated file; DO NOT EDIT.$' "$src/.config"
	} >"$out"
	echo "build-kernel: wrote $out ($(grep -c '=y$' "$out") options built in)"
	;;
build | verify)
	[ -f "$committed" ] || { echo "build-kernel: $committed missing: run 'make kernel-config'" >&2; exit 1; }
	# The kernel depends on the source, the config, the toolchain and the
	# build steps in compile (bump recipe= when they change what is built).
	recipe=1
	key=$( { echo "recipe=$recipe"; cat "$pin" "$committed"; gcc --version | head -1; ld --version | head -1; } | sha256sum | cut -c1-16)
	cached=$cache/$version-$key
	if [ "$mode" = verify ]; then
		[ -f "$cached/vmlinux" ] || { echo "build-kernel: verify: no cached build in $cached to compare with; run 'make kernel GUEST_KERNEL=own' first" >&2; exit 1; }
		compile
		diffs=0
		for f in vmlinux vmlinuz kernel.config kernel.release; do
			if cmp -s "$cached/$f" "$work/out/$f"; then
				echo "build-kernel: verify: $f identical ($(sha256sum "$cached/$f" | cut -c1-16)...)"
			else
				echo "build-kernel: verify: $f differs between two builds ($cached/$f, $work/out/$f): the build is not reproducible" >&2
				diffs=1
			fi
		done
		trap - EXIT # keep $work for a look at what differs
		[ $diffs = 0 ] && rm -rf "$work"
		exit $diffs
	fi
	if [ ! -f "$cached/vmlinux" ]; then
		compile
		rm -rf "$cached" && mv -T "$work/out" "$cached"
		echo "build-kernel: built in $(cat "$cached/build-time")" >&2
	fi
	mkdir -p "$out"
	for f in vmlinux vmlinuz kernel.config kernel.release; do
		cp "$cached/$f" "$out/.$f.tmp" && mv -f "$out/.$f.tmp" "$out/$f"
	done
	for f in vmlinux vmlinuz; do
		echo "$(sha256sum "$out/$f" | cut -d' ' -f1)  $out/$f ($(stat -c %s "$out/$f") bytes, $(cat "$out/kernel.release"))"
	done
	;;
*)
	echo "build-kernel: mode $mode: want build, config or verify" >&2
	exit 1
	;;
esac
