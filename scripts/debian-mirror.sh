#!/usr/bin/env bash
# Prints the Debian mirror this machine's apt is configured with (the first
# non-security source), so that added suites use the same one.
set -euo pipefail
mirror="$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
	grep -v security | head -1 | sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//' || true)"
[ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt" >&2; exit 1; }
echo "$mirror"
