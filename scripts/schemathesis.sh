#!/usr/bin/env bash
# Checks a running chat-api against its own OpenAPI document with
# schemathesis: no 5xx for any generated request, and every response
# conforms to the documented schema.
#
#   scripts/schemathesis.sh BASE_URL [EXTRA_ARGS...]   e.g. http://127.0.0.1:8081
#
# Two passes: one with generated site ids (mostly 404s), one with the site
# path parameter fixed to SCHEMATHESIS_SITE (default `demo`, the embedded
# demo site) so that the room routes are reached (schemathesis >= 4).
# EXTRA_ARGS go to `schemathesis run` (e.g. -H "Authorization: Bearer ...").
# Environment: SCHEMATHESIS_MAX_EXAMPLES (default 30 per operation),
# SCHEMATHESIS_TIMEOUT (seconds per request, default 5). Exits non-zero on
# any failure. schemathesis comes from scripts/deps.sh; installed here with
# pip when missing.
set -euo pipefail

base=${1:?usage: $0 BASE_URL}
base=${base%/}
shift
site=${SCHEMATHESIS_SITE:-demo}
examples=${SCHEMATHESIS_MAX_EXAMPLES:-30}
timeout=${SCHEMATHESIS_TIMEOUT:-5}

if ! command -v schemathesis >/dev/null 2>&1; then
  echo "schemathesis: installing with pip"
  python3 -m pip install -q schemathesis 2>/dev/null \
    || python3 -m pip install -q --break-system-packages schemathesis
fi

version=$(schemathesis --version 2>/dev/null | grep -o '[0-9][0-9.]*' | head -n 1)
major=${version%%.*}
checks=not_a_server_error,response_schema_conformance

if [ "${major:-0}" -ge 4 ]; then
  args=(--max-examples "$examples" --request-timeout "$timeout" --checks "$checks"
        --url "$base" --seed 1 --no-color)
else
  args=(--hypothesis-max-examples "$examples" --request-timeout "$((timeout * 1000))"
        --checks "$checks" --base-url "$base" --hypothesis-seed 1 --no-color)
fi

schema="$base/v1/openapi.json"
echo "schemathesis $version against $schema ($examples examples per operation)"
status=0
schemathesis run "${args[@]}" "$@" "$schema" || status=1
if [ "${major:-0}" -ge 4 ]; then
  config=$(mktemp)
  trap 'rm -f "$config"' EXIT
  printf '[parameters]\n"path.site" = "%s"\n' "$site" >"$config"
  echo "schemathesis: again with site '$site'"
  schemathesis --config-file "$config" run "${args[@]}" "$@" "$schema" || status=1
fi
[ $status -eq 0 ] && echo "schemathesis: no failure" || echo "schemathesis: FAILURES (see above)" >&2
exit $status
