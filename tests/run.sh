#!/usr/bin/env bash
# The two entry points for a fresh machine (run as root on Debian/Ubuntu):
#   bash tests/run.sh demo     the main job: throwaway servers, real faults, one table
#   bash tests/run.sh test     format, lint, header, build everything (benchmarks
#                              too), then every test against throwaway servers
# and one for developers:
#   bash tests/run.sh header   regenerate include/dialpool.h
# Missing Debian packages (postgresql, mariadb-server, pgbouncer, iptables,
# iproute2) are installed by the harness itself (dialpool-testkit), so this
# file and the tests share one install rule.
set -euo pipefail
cd "$(dirname "$0")/.."

CBINDGEN_VERSION=0.29.4

mode=${1:-}
case "$mode" in
  demo|test|header) ;;
  *) echo "usage: bash tests/run.sh demo|test|header" >&2; exit 2 ;;
esac

if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 2; }

step() { printf '\n== %s\n' "$*"; }

# The header generator is pinned: another cbindgen version writes another file.
ensure_cbindgen() {
  if [ "$(cbindgen --version 2>/dev/null)" != "cbindgen $CBINDGEN_VERSION" ]; then
    step "installing cbindgen $CBINDGEN_VERSION"
    cargo install --quiet --locked cbindgen --version "$CBINDGEN_VERSION"
  fi
}

generate_header() { # $1: output file
  (cd ffi && cbindgen --quiet --config cbindgen.toml --crate dialpool-ffi --output "$1")
}

if [ "$mode" = demo ]; then
  cargo build --release -q -p dialpool-cli
  exec ./target/release/dialpool demo
fi

if [ "$mode" = header ]; then
  ensure_cbindgen
  generate_header "$PWD/include/dialpool.h"
  echo "include/dialpool.h regenerated"
  exit 0
fi

step "toolchain"
cargo --version
rustc --version
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done
ensure_cbindgen
cbindgen --version

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets -q -- -D warnings

step "C header is what cbindgen $CBINDGEN_VERSION generates"
fresh=$(mktemp)
generate_header "$fresh"
if ! diff -u include/dialpool.h "$fresh"; then
  rm -f "$fresh"
  echo "include/dialpool.h is stale: run 'bash tests/run.sh header' and commit it" >&2
  exit 1
fi
rm -f "$fresh"

step "build (all targets, benchmarks included; release C library)"
cargo build --workspace --all-targets -q
cargo build --release -q -p dialpool-ffi

step "the static library's linker flags match the README and examples/c/native-libs.mk"
printed=$(cargo rustc -q --release -p dialpool-ffi --crate-type staticlib -- --print native-static-libs 2>&1 \
  | sed -n 's/.*native-static-libs: //p' | tail -n 1)
documented=$(sed -n 's/^NATIVE_LIBS := //p' examples/c/native-libs.mk)
echo "cargo prints: $printed"
[ "$printed" = "$documented" ] || { echo "examples/c/native-libs.mk says '$documented'" >&2; exit 1; }
grep -qF -- "$printed" README.md || { echo "README.md does not quote '$printed'" >&2; exit 1; }

step "C: tests, example, benchmark, C++ include, make install + pkg-config"
make -s -C tests/c
make -s -C examples/c
# The C benchmark compares against libpq; CI builds it but does not run it.
if [ ! -f /usr/include/postgresql/libpq-fe.h ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpq-dev >/dev/null
fi
make -s -C bench/c
# The C floor of the Go figures, likewise built and not run.
cfloor=$(mktemp)
cc -O2 -Wall -Wextra -Werror -Iinclude bench/go/cfloor/cfloor.c target/release/libdialpool.a \
  $documented -o "$cfloor"
rm -f "$cfloor"
stage=$(mktemp -d)
make -s install DESTDIR="$stage" PREFIX=/usr/local >/dev/null
PKG_CONFIG_SYSROOT_DIR="$stage" PKG_CONFIG_PATH="$stage/usr/local/lib/pkgconfig" \
  cc -o "$stage/installed_example" examples/c/query_timeout.c \
  $(PKG_CONFIG_SYSROOT_DIR="$stage" PKG_CONFIG_PATH="$stage/usr/local/lib/pkgconfig" pkg-config --cflags dialpool) \
  "$stage/usr/local/lib/libdialpool.a" \
  $(PKG_CONFIG_PATH="$stage/usr/local/lib/pkgconfig" pkg-config --libs-only-l --static dialpool | sed 's/-ldialpool//')
echo "installed library, header and dialpool.pc build a program"
rm -rf "$stage"

step "tests against throwaway servers and real faults"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo run -q -p dialpool-testkit -- run -- bash tests/suite.sh 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# One closing line for the whole run: the sum over every test binary and suite.
awk '/^test result:/ {
       for (i = 1; i <= NF; i++) {
         if ($(i+1) ~ /^passed/) p += $i
         if ($(i+1) ~ /^failed/) f += $i
         if ($(i+1) ~ /^ignored/) s += $i
       }
     }
     /^[a-z-]+: [0-9]+ passed, [0-9]+ failed/ { p += $2; f += $4 }
     # pytest: "125 passed, 2 skipped in 9.1s" or "3 failed, 122 passed in …"
     /^[0-9]+ (passed|failed).* in [0-9.]+s/ {
       for (i = 1; i < NF; i++) {
         if ($(i+1) ~ /^passed/) p += $i
         if ($(i+1) ~ /^failed/) f += $i
         if ($(i+1) ~ /^skipped/) s += $i
       }
     }
     END { printf "\n%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
if grep -q '^SKIPPED ' "$log"; then
  echo "some tests skipped themselves (see SKIPPED lines above)"
fi
exit "$status"
