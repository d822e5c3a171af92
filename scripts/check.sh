#!/usr/bin/env bash
# The static checks the project's configuration declares: ruff (lint and format) and mypy.
# mypy reads the packages under their installed names (`linetwin.twin`, ...) through a tree of
# links to the repository's folders, the same mapping pyproject.toml gives setuptools.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv/bin
"$venv/ruff" check .
"$venv/ruff" format --check .
tree=.build/typecheck/linetwin
rm -rf .build/typecheck
mkdir -p "$tree"
ln -s ../../../linetwin/__init__.py ../../../linetwin/__main__.py "$tree/"
for pkg in cli twin models optimizer replay api; do
    ln -s "../../../$pkg" "$tree/$pkg"
done
"$venv/python" -m mypy
