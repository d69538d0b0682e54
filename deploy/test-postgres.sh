#!/usr/bin/env bash
# The Console's tests on PostgreSQL: a throwaway cluster (deploy/with-postgres.sh) in which
# every test Console gets a database of its own. Extra arguments go to cargo test (e.g.
# `--test fleet_list`).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash deploy/with-postgres.sh cargo test -p defender-console --locked "$@"
