#!/usr/bin/env bash
# `make demo`: Kafka -> Delta Lake end to end on the local infrastructure. Produces JSON events,
# runs kafkatable-ingester from a KafkaTable manifest (Delta on S3/MinIO, partitioned by event
# day), and reads the table back with deltalake and polars.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/infra.sh" up
# shellcheck disable=SC1090,SC1091
source "$KAFKATABLE_RUN/env"
TARGET=${CARGO_TARGET_DIR:-$KAFKATABLE_CACHE/target}
ingester=$TARGET/debug/kafkatable-ingester
run=$KAFKATABLE_RUN/demo/$(date +%s)
topic=demo-clicks-$(date +%s)
mkdir -p "$run/secrets/s3"
printf '%s' "$KT_S3_ACCESS_KEY" > "$run/secrets/s3/accessKeyId"
printf '%s' "$KT_S3_SECRET_KEY" > "$run/secrets/s3/secretAccessKey"
"$KT_PYTHON" "$here/s3_bucket.py" "$KT_S3_ENDPOINT" "$KT_S3_ACCESS_KEY" "$KT_S3_SECRET_KEY" demo

cat > "$run/clicks.yaml" <<YAML
apiVersion: kafkatable.io/v1alpha1
kind: KafkaTable
metadata: {name: clicks, namespace: demo}
spec:
  source: {brokers: "$KT_KAFKA_BOOTSTRAP", topic: $topic}
  table:
    format: delta
    location: s3://demo/$topic
    storage: {endpoint: "$KT_S3_ENDPOINT", region: us-east-1, pathStyle: true, credentialsSecretRef: {name: s3}}
    eventTime: {field: ts, format: epochMillis}
    partitionBy: [{field: ts, transform: day}]
  commit: {interval: 2s}
YAML
echo "== the KafkaTable ($run/clicks.yaml)"; cat "$run/clicks.yaml"; echo
"$KT_PYTHON" "$here/demo.py" produce "$KT_KAFKA_BOOTSTRAP" "$topic" 20000

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "== kafkatable-ingester run -f clicks.yaml (log: $run/ingester.log)"
"$ingester" run -f "$run/clicks.yaml" --secrets-dir "$run/secrets" --http-addr "127.0.0.1:$port" --client-id demo \
  > "$run/ingester.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
"$KT_PYTHON" "$here/demo.py" show "s3://demo/$topic" "$KT_S3_ENDPOINT" "$KT_S3_ACCESS_KEY" "$KT_S3_SECRET_KEY" "$topic" 20000
sleep 6 # per-partition lag comes from librdkafka's statistics, every 5 s
echo; echo "== metrics (http://127.0.0.1:$port/metrics)"
curl -s "127.0.0.1:$port/metrics" | grep -E '^kafkatable_(records_consumed_total|rows_committed_total|commits_total|assigned_partitions) |^kafkatable_partition_lag\{'
kill -TERM $pid; wait $pid || true
echo; echo "The ingester stopped on SIGTERM after committing what it held. The infrastructure keeps running (make infra-status); stop it with: make infra-down"
