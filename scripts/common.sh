# Shared set-up for scripts/test.sh and scripts/tour.sh: sourced, not run.
# Builds the C side with CMake into build/ and installs the Python package with pip into a
# virtual environment at build/venv, installing whatever is missing first.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
JOBS=$(nproc 2>/dev/null || echo 2)
PY=${PYTHON:-python3}

need_debian_tools() {
    local missing=()
    command -v cc >/dev/null || missing+=(gcc libc6-dev)
    command -v cmake >/dev/null || missing+=(cmake)
    command -v ninja >/dev/null || missing+=(ninja-build)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    "$PY" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    "$PY" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing+=(python3-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        echo "== installing Debian packages: ${missing[*]}"
        if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
}

build_c() { # build_c DIR [cmake options...]
    local dir=$1
    shift
    cmake -S "$ROOT" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j "$JOBS"
}

setup_venv() {
    VENV="$ROOT/build/venv"
    if [ ! -x "$VENV/bin/python" ]; then
        "$PY" -m venv --system-site-packages "$VENV"
    fi
    VPY="$VENV/bin/python"
    "$VPY" -m pip install -q --disable-pip-version-check "pytest>=7" "pytest-timeout>=2" numpy
    echo "== pip install . (the mpservice package and its extension)"
    "$VPY" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps .
}
