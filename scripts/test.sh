#!/usr/bin/env bash
# Runs every test: the C tests (plain build and an ASan+UBSan build) and the Python tests
# against the package installed with pip. Does all set-up itself.
source "$(dirname "$0")/common.sh"

need_debian_tools

echo "== C build and tests"
build_c build -DMPX_BUILD_PYTHON=OFF
ctest --test-dir build --output-on-failure -j 1

echo "== C tests under AddressSanitizer + UndefinedBehaviorSanitizer"
build_c build-asan -DMPX_SANITIZE=ON -DMPX_BUILD_PYTHON=OFF -DMPX_BUILD_EXAMPLES=OFF -DMPX_BUILD_BENCH=OFF
ctest --test-dir build-asan --output-on-failure -j 1

echo "== Python tests"
setup_venv
before=$(ls /dev/shm | wc -l)
"$VPY" -m pytest -q -p no:cacheprovider tests/python
after=$(ls /dev/shm | wc -l)
if [ "$after" -gt "$before" ]; then
    echo "FAIL: the Python tests left $((after - before)) new entries in /dev/shm" >&2
    exit 1
fi
