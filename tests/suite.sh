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

echo "== C: the same suite under valgrind memcheck (fewer stress rounds)"
if command -v valgrind >/dev/null 2>&1; then
  DP_C_STRESS=50 valgrind -q --suppressions=tests/c/valgrind.supp --error-exitcode=3 \
    --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite \
    tests/c/test_ffi || status=1
else
  echo "valgrind is missing" >&2
  status=1
fi

echo "== C: the example, against the throwaway PostgreSQL"
examples/c/query_timeout "$DIALPOOL_TEST_PG_URL?sslmode=disable" || status=1

echo "== Go: go vet and go test -race over the static library"
bash go/test.sh || status=1

echo "== Python: the wheel built from source, pytest"
bash python/test.sh || status=1

exit $status
