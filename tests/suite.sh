#!/usr/bin/env bash
# Every test, run by `dialpool-testkit run` (which has started the throwaway
# servers and exported their URLs). Called by tests/run.sh test.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0

echo "== Rust: cargo test --workspace"
cargo test --workspace -q --no-fail-fast || status=1

echo "== C: the ABI through the header"
tests/c/test_ffi || status=1
tests/c/header_cpp >/dev/null || status=1

echo "== C: the example, against the throwaway PostgreSQL"
examples/c/query_timeout "$DIALPOOL_TEST_PG_URL?sslmode=disable" || status=1

exit $status
