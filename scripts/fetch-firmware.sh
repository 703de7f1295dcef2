#!/usr/bin/env bash
# Fetches the AmdSev build of OVMF (OVMF.amdsev.fd), the firmware of the SEV, SEV-ES and SNP
# runtime classes: the one OVMF build that checks the kernel, initrd and command line against
# the hashes QEMU puts into the launch measurement (kernel_hashes). Debian ships it in the
# ovmf-amdsev package from sid (bookworm's ovmf has only the generic build). The package is
# downloaded and the one file extracted, not installed: ovmf-amdsev Breaks bookworm's ovmf, so
# installing it would move that package too. The copy is also what the measurement covers:
# it changes only when this script runs again, never by an apt upgrade.
#
# Usage: scripts/fetch-firmware.sh OUTDIR   (needs the sid source scripts/install-deps.sh adds)
# OVMF_AMDSEV_VERSION=2026.08+ds-2 pins the package version.
set -euo pipefail

out="${1:?usage: $0 OUTDIR}"
pkg=ovmf-amdsev
candidate="$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ {print $2}')"
if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
	echo "fetch-firmware: apt knows no $pkg: run scripts/install-deps.sh first (it adds Debian sid with pin priority 1)," >&2
	echo "fetch-firmware: or copy /usr/share/ovmf/OVMF.amdsev.fd from a Debian 13+ host's ovmf-amdsev into $out" >&2
	exit 1
fi
version="${OVMF_AMDSEV_VERSION:-}"
if [ -z "$version" ]; then
	version="$(apt-cache madison "$pkg" | awk -F'|' '/sid|unstable/ {gsub(/ /, "", $2); print $2; exit}')"
	version="${version:-$candidate}"
fi

mkdir -p "$out"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && apt-get download -qq "$pkg=$version" 2>/dev/null) ||
	{ echo "fetch-firmware: apt-get download $pkg=$version failed" >&2; exit 1; }
dpkg-deb --fsys-tarfile "$tmp"/"$pkg"_*.deb | tar -x -C "$tmp" ./usr/share/ovmf/OVMF.amdsev.fd
install -m 0644 "$tmp/usr/share/ovmf/OVMF.amdsev.fd" "$out/OVMF.amdsev.fd"
echo "$pkg $version" >"$out/OVMF.amdsev.fd.version"
printf 'fetch-firmware: %s  %s (%s %s)\n' "$(sha256sum "$out/OVMF.amdsev.fd" | cut -d' ' -f1)" "$out/OVMF.amdsev.fd" "$pkg" "$version"
