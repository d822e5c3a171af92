#!/usr/bin/env bash
# Set up linetwin in ./.venv: the pinned versions of constraints.txt, the package editable.
#   scripts/setup.sh        the product (twin, CLI; torch for the surrogate)
#   scripts/setup.sh dev    the product plus the test and lint tools
# Re-running is cheap: nothing is installed again unless pyproject.toml or constraints.txt
# changed.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "dev" ] && extras="dev"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "linetwin needs Python >= 3.11 (found: $("$python" --version 2>&1))" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.linetwin-setup-${extras:-base}"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -c constraints.txt -e ".${extras:+[$extras]}"
    echo "$want" > "$stamp"
fi
