#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv and install nmsat into it.
#   bash scripts/setup.sh          runtime dependencies (+ the digits data extra)
#   bash scripts/setup.sh --tests  also the dev tools and the system simulators the tests need
# Safe to run again: pip only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
want_tests=0
[ "${1:-}" = "--tests" ] && want_tests=1

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade "pip>=25.1"
if [ "$want_tests" = 1 ]; then
    .venv/bin/python -m pip install --quiet -e ".[data]" --group dev
    if ! command -v iverilog >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "setup: installing Icarus Verilog from Debian's packages" >&2
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null
        else
            echo "setup: iverilog missing and not root: RTL tests will fail until it is installed" >&2
        fi
    fi
else
    .venv/bin/python -m pip install --quiet -e ".[data]"
fi
