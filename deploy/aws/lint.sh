#!/usr/bin/env bash
# The test of deploy/aws, run by .ci/run: cfn-lint (PyPI) on the CloudFormation templates, then a
# check that every CONSOLE_* variable the template sets is one defender-console reads and that
# the load balancer's health check path is a route it serves.
# cfn-lint is installed once, pinned, into a venv outside the repository, beside
# deploy/install-deps.sh's tools: $DEFENDER_TOOLS_DIR (default ~/.cache/defender-tools)
# /cfn-lint-VERSION, or CFN_LINT_VENV. Needs python3 with venv (Debian: python3-venv, which
# deploy/install-deps.sh installs) and PyPI the first time.
#
#   deploy/aws/lint.sh        # exit status non-zero on any finding
set -euo pipefail
cd "$(dirname "$0")"

version="${CFN_LINT_VERSION:-1.58.0}"
venv="${CFN_LINT_VENV:-${DEFENDER_TOOLS_DIR:-$HOME/.cache/defender-tools}/cfn-lint-$version}"

if ! "$venv/bin/cfn-lint" --version 2>/dev/null | grep -qF "$version"; then
    echo "==> installing cfn-lint $version into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "cfn-lint==$version"
fi

echo "==> cfn-lint $version: deploy/aws/*.yaml"
# Every finding fails, informational ones included, in every Region cfn-lint knows.
"$venv/bin/cfn-lint" --include-checks I --regions ALL_REGIONS --non-zero-exit-code informational \
    --format parseable -- *.yaml
echo "cfn-lint: no findings"

# The Console's environment variables the template sets must be ones `defender-console` reads
# (`env = "…"` in console/src/cli.rs), so that a renamed flag cannot leave the template setting
# a variable nobody reads.
echo "==> console.yaml vs the Console: CONSOLE_* variables (console/src/cli.rs), health check path (console/src/web/mod.rs)"
missing=0
for name in $(sed -n 's/^ *- Name: \(CONSOLE_[A-Z0-9_]*\)$/\1/p' console.yaml | sort -u); do
    if grep -qF "env = \"$name\"" ../../console/src/cli.rs; then
        continue
    else
        echo "error: console.yaml sets $name, which console/src/cli.rs does not read" >&2
        missing=1
    fi
done
# The ALB's health check path must be a route the Console serves without a session.
for path in $(sed -n 's/^ *HealthCheckPath: \(.*\)$/\1/p' console.yaml | sort -u); do
    if ! grep -qF ".route(\"$path\"" ../../console/src/web/mod.rs; then
        echo "error: console.yaml health-checks $path, which console/src/web/mod.rs does not route" >&2
        missing=1
    fi
done
[ "$missing" = 0 ]
echo "environment variables and health check path: ok"
