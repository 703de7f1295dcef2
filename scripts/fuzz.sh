#!/usr/bin/env bash
# Runs every fuzz target of the module (each `func FuzzX` in a *_test.go)
# for FUZZTIME each, one after another, and prints a table: target,
# executions, new inputs, result. Inputs that fail are written by Go to
# <package>/testdata/fuzz/<target>/ and run as regression cases by every
# plain `go test` from then on: commit them with the fix.
#   scripts/fuzz.sh 30s            every target, 30 s each
#   scripts/fuzz.sh 5s FuzzDecode  the targets matching a regexp
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-30s}
match=${2:-.}
go=${GO:-go}
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

failed=0
printf '%-44s %-20s %12s %8s  %s\n' package target execs new result
while read -r file target; do
	pkg=$(dirname "$file")
	out=$log/$target.$RANDOM
	# -parallel 1: the machines this runs on have two shared cores.
	# A run whose only failure is "context deadline exceeded", with no
	# failing input written, is the fuzzing engine hitting -fuzztime while
	# a worker was busy (seen on loaded machines with 2 s budgets), not the
	# target: it gets one more run. A second such run counts as a failure
	# (a target that hangs looks the same).
	for attempt in 1 2; do
		if $go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel 1 "$pkg" >"$out" 2>&1; then
			result=ok
			break
		fi
		result=FAILED
		if grep -q 'Failing input written to' "$out" || ! grep -q 'context deadline exceeded' "$out"; then
			break
		fi
	done
	[ "$result" = ok ] || failed=1
	last=$(grep -o 'execs: [0-9]*' "$out" | tail -1 | cut -d' ' -f2)
	new=$(grep -o 'new interesting: [0-9]*' "$out" | tail -1 | cut -d' ' -f3)
	printf '%-44s %-20s %12s %8s  %s\n' "$pkg" "$target" "${last:-?}" "${new:-0}" "$result"
	if [ "$result" = FAILED ]; then
		sed 's/^/    /' "$out" | tail -30
	fi
done < <(grep -rEo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | grep -v '^./build/' |
	sed -E 's/:func / /' | grep -E " ${match}| .*${match}" | sort)
exit $failed
