#!/usr/bin/env bash
# Creates the Python venv with the independent readers and producers the tests use to check
# what we write: deltalake, pyiceberg, polars, duckdb, confluent-kafka.
# Idempotent: the venv is keyed by a hash of the pinned package list.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${KAFKATABLE_CACHE:-$HOME/.cache/kafkatable}
key=$(printf '%s' "$PY_READERS" | sha256sum | cut -c1-12)
venv="$CACHE/venv-$key"
if [[ ! -f $venv/.complete ]]; then
  printf '[py-tools] creating %s\n' "$venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/pip" install -q --disable-pip-version-check $PY_READERS
  touch "$venv/.complete"
fi
ln -sfn "$venv" "$CACHE/venv"
