#!/usr/bin/env bash
# Set up linetwin in ./.venv: the pinned versions of constraints.txt, the package editable.
#   scripts/setup.sh        the product (twin, CLI; torch for the surrogate)
#   scripts/setup.sh dev    the product plus the test and lint tools, and (where apt-get may
#                           be used: root or passwordless sudo) Debian's chromium for the web
#                           page's browser tests
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
if [ "$extras" = "dev" ] && [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then
    # The web page's end-to-end tests drive a headless Chromium with Playwright. Playwright's own
    # browser download needs its CDN; Debian's package needs only the configured mirror. Never
    # fatal: without a browser those tests skip and say why.
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo -n"
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
        echo "installing Debian's chromium for the web page's browser tests" >&2
        export DEBIAN_FRONTEND=noninteractive
        install="$sudo apt-get install -y -qq --no-install-recommends chromium"
        if ! $install >/dev/null 2>&1; then
            $sudo apt-get update -qq >/dev/null 2>&1 || true
            $install >/dev/null 2>&1 || true
        fi
    fi
    if [ ! -x /usr/bin/chromium ] && ! command -v chromium >/dev/null 2>&1; then
        echo "note: no chromium (apt-get install chromium); the web page's browser tests will skip" >&2
    fi
fi
