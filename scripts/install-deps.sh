#!/usr/bin/env bash
# Installs the host packages the build, the tests and the demo need, on Debian 12.
# Newer suites (bookworm-backports for QEMU >= 9.1, sid for vhost-device-vsock) are added
# with pin priority 1 so nothing else on the machine moves; only the packages named here
# are taken from them. Idempotent: a second run that finds everything installed does nothing.
set -euo pipefail

APT_PACKAGES=(
	busybox-static containernetworking-plugins cpio erofs-utils gcc iproute2 iptables libc6-dev
	libcap-dev libprotobuf-dev libseccomp-dev libyajl-dev musl-tools pkg-config protobuf-compiler xz-utils zstd
	# Building our guest kernel (GUEST_KERNEL=own, guest-assets/kernel/build-kernel.sh).
	bc bison flex libelf-dev libssl-dev lz4 make
)
BACKPORTS_PACKAGES=(qemu-system-x86 qemu-utils)
SID_PACKAGES=(vhost-device-vsock)
# Not a package here: the AmdSev OVMF of the SEV/SNP classes. sid's ovmf-amdsev Breaks bookworm's
# ovmf, so `make firmware` (scripts/fetch-firmware.sh) extracts OVMF.amdsev.fd from it through the
# sid source added below, and `make install` copies it into share_dir.

stamp=/var/lib/coco-shim-deps.stamp
want="$(printf '%s\n' "${APT_PACKAGES[@]}" "${BACKPORTS_PACKAGES[@]}" "${SID_PACKAGES[@]}" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && command -v vhost-device-vsock >/dev/null; then
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "install-deps: needs root to run apt-get (try: sudo $0)" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Re-use the Debian mirror this machine is already configured with.
mirror="$("$(dirname "$0")/debian-mirror.sh")" || { echo "install-deps: cannot add the newer suites" >&2; exit 1; }
printf 'deb %s bookworm-backports main\ndeb %s sid main\n' "$mirror" "$mirror" >/etc/apt/sources.list.d/coco-shim.list
cat >/etc/apt/preferences.d/coco-shim <<'PREF'
Package: *
Pin: release n=sid
Pin-Priority: 1

Package: *
Pin: release n=bookworm-backports
Pin-Priority: 100
PREF

apt-get update -qq
apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
apt-get install -y -qq --no-install-recommends -t bookworm-backports "${BACKPORTS_PACKAGES[@]}" >/dev/null
apt-get install -y -qq --no-install-recommends -t sid "${SID_PACKAGES[@]}" >/dev/null
echo "$want" >"$stamp"
echo "install-deps: $(qemu-system-x86_64 --version | head -1); $(vhost-device-vsock --version 2>&1 | head -1)"
