#!/usr/bin/env bash
# The Go module's checks: builds the static library when it is missing, then
# gofmt, go vet and the tests with the race detector. Run it under the test
# runner, which starts the throwaway servers and exports their URLs:
#   cargo run -q -p dialpool-testkit -- run -- bash go/test.sh
# Without DIALPOOL_TEST_PG_URL the server tests skip (or fail when
# DIALPOOL_REQUIRE_FAULTS=1, as under the runner).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v go >/dev/null 2>&1; then
  echo "go: not found (the Go module needs Go 1.25 or later)" >&2
  exit 1
fi

if [ ! -f ../target/release/libdialpool.a ]; then
  echo "== building the static library (cargo build --release -p dialpool-ffi)"
  (cd .. && cargo build --release -q -p dialpool-ffi)
fi

echo "== go: $(go version)"
unformatted=$(gofmt -l . ../bench/go)
if [ -n "$unformatted" ]; then
  echo "gofmt: these files need formatting:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
(cd ../bench/go && go vet ./...)

# -v so that skips show with their reasons; one closing line in the form
# tests/run.sh adds up ("go: N passed, N failed, N skipped").
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
go test -race -count=1 -v ./... 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
# The OpenTelemetry example is a module of its own, so that its
# dependencies stay out of the binding's go.mod.
(cd examples/otel && go vet ./... && go test -race -count=1 -v ./...) 2>&1 | tee -a "$log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
set -e
sed -n 's/^ *[a-z_]*_test\.go:[0-9]*: \(SKIPPED .*\)/\1/p' "$log"
passed=$(grep -cE '^ *--- PASS:' "$log" || true)
failed=$(grep -cE '^ *--- FAIL:' "$log" || true)
skipped=$(grep -cE '^ *--- SKIP:' "$log" || true)
echo "go: $passed passed, $failed failed, $skipped skipped"
exit "$status"
