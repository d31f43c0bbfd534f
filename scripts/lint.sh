#!/usr/bin/env bash
# Lint, format check and strict type check of the whole package (run by tests/test_lint.py).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
# The repository root is the package `nmsat`; mypy finds it through a symlink of that name.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ln -s "$PWD" "$tmp/nmsat"
MYPYPATH="$tmp" .venv/bin/mypy --config-file pyproject.toml -p nmsat
