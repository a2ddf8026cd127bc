#!/usr/bin/env bash
# The two entry points for a fresh machine (run as root on Debian/Ubuntu):
#   bash tests/run.sh demo   the main job: throwaway servers, real faults, one table
#   bash tests/run.sh test   format, lint, build everything (benchmarks too), run every test
# Missing Debian packages (postgresql, mariadb-server, iptables, iproute2) are
# installed by the harness itself (dialpool-testkit), so this file and the
# tests share one install rule.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
case "$mode" in
  demo|test) ;;
  *) echo "usage: bash tests/run.sh demo|test" >&2; exit 2 ;;
esac

if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }

if [ "$mode" = demo ]; then
  cargo build --release -q -p dialpool-cli
  exec ./target/release/dialpool demo
fi

step() { printf '\n== %s\n' "$*"; }

step "toolchain"
cargo --version
rustc --version
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets -q -- -D warnings

step "build (all targets, benchmarks included)"
cargo build --workspace --all-targets -q

step "tests against throwaway servers and real faults"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo run -q -p dialpool-testkit -- run -- cargo test --workspace -q 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# One closing line for the whole run: the sum over every test binary.
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed/) p += $i
         if ($(i+1) ~ /^failed/) f += $i
         if ($(i+1) ~ /^ignored/) s += $i
       }
     }
     END { printf "\n%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
if grep -q '^SKIPPED ' "$log"; then
  echo "some tests skipped themselves (see SKIPPED lines above)"
fi
exit "$status"
