#!/bin/sh
# Example shell hook: saves the document steerhook hands over (stdin) as
# hook-output/<event id>.json. Idempotent: a retry or a replay of the same
# event (same STEERHOOK_EVENT_ID, higher STEERHOOK_ATTEMPT) rewrites the same
# file atomically, so running it twice does no harm.
set -eu
out="${OUT_DIR:-hook-output}"
mkdir -p "$out"
name=$(printf '%s' "$STEERHOOK_EVENT_ID" | tr -c 'A-Za-z0-9_.-' '_')
cat > "$out/.$name.tmp"
mv "$out/.$name.tmp" "$out/$name.json"
echo "saved $STEERHOOK_EVENT_TYPE for run $STEERHOOK_RUN_ID (status $STEERHOOK_RUN_STATUS, attempt $STEERHOOK_ATTEMPT) to $out/$name.json"
