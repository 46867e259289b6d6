#!/usr/bin/env bash
# Installs the third-party components the tests run against: real servers
# (nats-server, HAProxy), real scrapers and browsers, and client libraries
# from PyPI and npm. Each file in .ci/needs/ names what one part of the
# suite needs, with the functions below; `.ci/run` runs this first, and a
# developer may run it by hand (`bash .ci/provision.sh`, root for apt).
#
# Where things land, which the tests look up by these fixed paths:
#   Debian packages    on PATH (apt-get, only when the command is missing)
#   Python packages    target/ci/venv       (tests use target/ci/venv/bin/python)
#   npm packages       target/ci/node/node_modules
# Tests that need a component skip with a printed reason when it is missing,
# except under CI=true, where a missing component fails the test.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CI_DIR=$ROOT/target/ci
mkdir -p "$CI_DIR"

APT_UPDATED=0
# ci_apt COMMAND PACKAGE...: install PACKAGEs unless COMMAND is on PATH.
ci_apt() {
    local command=$1
    shift
    if command -v "$command" >/dev/null 2>&1; then return 0; fi
    if [ "$(id -u)" != 0 ]; then
        echo "provision: $command is missing; install $* (needs root)" >&2
        return 0
    fi
    if [ "$APT_UPDATED" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ci_pip PACKAGE...: install PACKAGEs (pip requirement specifiers) into the venv.
ci_pip() {
    if [ ! -x "$CI_DIR/venv/bin/python" ]; then
        python3 -m venv "$CI_DIR/venv"
    fi
    "$CI_DIR/venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
}

# ci_npm PACKAGE...: install PACKAGEs into target/ci/node/node_modules.
ci_npm() {
    mkdir -p "$CI_DIR/node"
    if [ ! -f "$CI_DIR/node/package.json" ]; then
        echo '{"name":"junction-ci","private":true}' >"$CI_DIR/node/package.json"
    fi
    (cd "$CI_DIR/node" && npm install --silent --no-audit --no-fund "$@")
}

shopt -s nullglob
for need in "$ROOT"/.ci/needs/*.sh; do
    echo "provision: $(basename "$need")"
    # shellcheck source=/dev/null
    source "$need"
done
