#!/bin/sh
# Makes sure the PostgreSQL server the store tests use is up (it is, on a fresh machine
# of this project's kind; this covers one that was stopped).
set -eu
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null 2>&1; then
    version=$(ls /etc/postgresql | head -n1)
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pg_isready -q -h 127.0.0.1 -p 5432 && exit 0
        sleep 1
    done
fi
echo "warning: PostgreSQL is not answering on 127.0.0.1:5432; its tests will fail in CI" >&2
