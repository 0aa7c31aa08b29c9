#!/usr/bin/env bash
# Runs every fuzz target in the module for the given time (default 1m),
# goes on after a failure, and lists the failed targets at the end. A
# crashing input is saved under the package's testdata/fuzz/ and becomes
# part of the seed corpus that `make test` runs.
set -uo pipefail
fuzztime=${1:-1m}
failed=()
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //'); do
		echo "== $pkg $target ($fuzztime)"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"; then
			failed+=("$pkg $target")
		fi
	done
done
if [ ${#failed[@]} -gt 0 ]; then
	printf 'failed: %s\n' "${failed[@]}"
	exit 1
fi
echo "all fuzz targets passed"
