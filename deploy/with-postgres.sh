#!/usr/bin/env bash
# Runs a command with a throwaway PostgreSQL cluster (deploy/pg-test-cluster.sh: installs
# Debian's postgresql package when missing, 127.0.0.1 only, an unprivileged user, removed at
# the end), its admin URL in CONSOLE_TEST_DATABASE_URL:
#
#   deploy/with-postgres.sh cargo test -p defender-console      # what deploy/test-postgres.sh does
#   deploy/with-postgres.sh cargo bench -p defender-console --bench replay
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -gt 0 ]] || { echo "usage: $0 COMMAND [ARGS…]" >&2; exit 2; }
eval "$(bash deploy/pg-test-cluster.sh start)"
trap 'bash deploy/pg-test-cluster.sh stop "$PG_TEST_DIR"' EXIT
echo "==> PostgreSQL at $CONSOLE_TEST_DATABASE_URL" >&2
"$@"
