#!/usr/bin/env bash
# Builds the dialpool Python package from source into python/.venv and runs
# its pytest suite. The servers come from the environment the test runner
# exports (DIALPOOL_TEST_PG_URL, DIALPOOL_TEST_MARIADB_URL, ...), e.g.:
#
#   cargo run -q -p dialpool-testkit -- run -- bash python/test.sh
#
# Extra arguments go to pytest (bash python/test.sh -k timeout -x).
# PYTHON picks the interpreter that makes the venv (default: python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "test.sh: creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"
# The maturin build backend runs the `maturin` program from PATH.
export PATH="$venv/bin:$PATH"

# prometheus_client: its text-format parser reads Pool.metrics_text() in the tests.
if ! "$py" -c 'import maturin, pytest, prometheus_client' 2>/dev/null; then
    echo "test.sh: installing maturin, pytest and prometheus_client into the venv"
    "$py" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$py" -m pip install --quiet --disable-pip-version-check 'maturin>=1.7,<2' 'pytest>=7' 'prometheus_client>=0.20'
fi

# A release build from the source tree: what `pip install ./python` does,
# without an isolated build environment (maturin is already in the venv).
echo "test.sh: building and installing dialpool (release)"
"$py" -m pip install --quiet --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps "$here"

cd "$here/.."
echo "test.sh: running pytest"
exec "$py" -m pytest "$here/tests" -q -p no:cacheprovider "$@"
