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
# These end with an uncaught exception on purpose: the point is the traceback they print.
ends_with_error="error.py error_two_hops.py"
for ex in examples/python/*.py; do
    echo
    echo "== $ex"
    if [[ " $ends_with_error " == *" $(basename "$ex") "* ]]; then
        status=0
        "$VPY" "$ex" || status=$?
        [ "$status" -eq 1 ] || { echo "$ex: expected exit status 1, got $status" >&2; exit 1; }
        echo "(exit status 1, as intended)"
    else
        "$VPY" "$ex"
    fi
done
