#!/usr/bin/env bash
# Make the PostgreSQL server binaries (initdb, pg_ctl, postgres) available, installing the Debian
# package when they are missing, and print the folder that holds them (last line of stdout).
#
# Used by the Postgres integration test (tests/production/test_postgres_stack.py) and by .ci/run.
# It never starts a server and never creates the distribution's default cluster: the test runs its
# own throw-away server on a loopback port.
#
# Exit codes: 0 binaries available; 3 missing and cannot be installed here (not root, or no apt).
set -euo pipefail

find_bindir() {
    local dir
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    while IFS= read -r dir; do
        if [[ -x "$dir/pg_ctl" && -x "$dir/initdb" && -x "$dir/postgres" ]]; then
            echo "$dir"
            return 0
        fi
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r)
    return 1
}

if bindir=$(find_bindir); then
    echo "$bindir"
    exit 0
fi

if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_postgres: PostgreSQL server binaries not found and cannot be installed here" \
         "(need root and apt-get); install the 'postgresql' package" >&2
    exit 3
fi

echo "ensure_postgres: installing PostgreSQL from the Debian archive (apt-get install postgresql)" >&2
# Do not let the package create and start its default cluster: we only want the binaries.
mkdir -p /etc/postgresql-common
if [[ ! -f /etc/postgresql-common/createcluster.conf ]] || \
   ! grep -q '^create_main_cluster *= *false' /etc/postgresql-common/createcluster.conf; then
    echo "create_main_cluster = false" >> /etc/postgresql-common/createcluster.conf
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends postgresql >&2

if bindir=$(find_bindir); then
    echo "$bindir"
    exit 0
fi
echo "ensure_postgres: 'postgresql' was installed but pg_ctl/initdb are still not found" >&2
exit 3
