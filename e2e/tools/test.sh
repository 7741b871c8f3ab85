#!/usr/bin/env bash
# Runs the unit tests, then the integration tests against the real infrastructure. Starts the
# infrastructure if it is not running and, in that case, stops it again at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

started=()
for c in k8s kafka minio iceberg registry; do
  if "$here/infra.sh" status "$c" | grep -q stopped; then started+=("$c"); fi
done
cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -n ${KAFKATABLE_RUN:-} && -d $KAFKATABLE_RUN ]]; then
    echo "--- last lines of the infrastructure logs ($KAFKATABLE_RUN) ---" >&2
    for log in "$KAFKATABLE_RUN"/*/log; do echo "== $log" >&2; tail -n 15 "$log" >&2; done
  fi
  if ((${#started[@]} > 0)); then "$here/infra.sh" down "${started[@]}"; fi
  exit "$rc"
}
trap cleanup EXIT

cargo test --workspace --lib --bins --locked
"$here/infra.sh" up
cargo test -p kafkatable-e2e --test '*' --locked
