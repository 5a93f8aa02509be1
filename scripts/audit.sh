#!/bin/sh
# Checks every locked version against PyPI's advisory data with pip-audit. --strict: a
# package that could not be checked fails the run instead of passing silently. When
# PyPI's per-release API cannot be reached at all, it says that once, plainly, rather
# than blaming the first package.
set -eu
BIN=${BIN:-.venv/bin}
PROBE=https://pypi.org/pypi/pip/24.0/json
if ! "$BIN/python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=20)" \
        "$PROBE" 2>/dev/null; then
    echo "audit: NOT DONE: $PROBE does not answer from this machine, so the locked versions" >&2
    echo "audit: could not be checked for known vulnerabilities; run 'make audit' where pypi.org is reachable" >&2
    exit 1
fi
exec "$BIN/pip-audit" --strict --progress-spinner off --disable-pip --require-hashes \
    -r requirements/test.txt -r requirements/bench.txt
