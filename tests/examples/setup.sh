#!/usr/bin/env bash
# Installs what the examples need, once: a Python venv with grpcio,
# grpcio-tools, stellar-sdk and standardwebhooks (target/examples/venv) and
# the Node packages, buf included (tests/examples/node/node_modules). Each part is redone only when its
# requirements changed, so a second run takes a few milliseconds.
set -euo pipefail
cd "$(dirname "$0")"
examples=$PWD
out=$(cd ../.. && pwd)/target/examples
mkdir -p "$out"

# Two test runs may set up at the same time.
exec 9>"$out/.setup.lock"
flock 9

venv=$out/venv
if ! cmp -s python/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r python/requirements.txt
    cp python/requirements.txt "$venv/requirements.txt"
fi

modules=$examples/node/node_modules
if ! cmp -s node/package-lock.json "$modules/.installed-lock.json" 2>/dev/null; then
    (cd node && npm ci --include=dev --silent --no-audit --no-fund >/dev/null)
    cp node/package-lock.json "$modules/.installed-lock.json"
fi
