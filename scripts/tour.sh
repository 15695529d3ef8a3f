#!/usr/bin/env bash
# The tour: builds everything, then runs each example, C and Python.
source "$(dirname "$0")/common.sh"

need_debian_tools
build_c build -DMPX_BUILD_PYTHON=OFF
setup_venv

for ex in build/examples/c/*; do
    [ -x "$ex" ] && [ -f "$ex" ] || continue
    echo
    echo "== examples/c/$(basename "$ex")"
    "$ex"
done
for ex in examples/python/*.py; do
    echo
    echo "== $ex"
    "$VPY" "$ex"
done
