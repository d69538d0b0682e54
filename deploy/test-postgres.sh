#!/usr/bin/env bash
# The Console's tests on PostgreSQL: starts a throwaway cluster (deploy/pg-test-cluster.sh:
# installs PostgreSQL from Debian's packages when missing, 127.0.0.1 only, removed at the end),
# points every test Console at a database of its own in it, runs the tests, stops the cluster.
# Extra arguments go to cargo test (e.g. `--test fleet_list`).
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(bash deploy/pg-test-cluster.sh start)"
trap 'bash deploy/pg-test-cluster.sh stop "$PG_TEST_DIR"' EXIT
echo "==> Console tests on PostgreSQL ($CONSOLE_TEST_DATABASE_URL)"
cargo test -p defender-console --locked "$@"
