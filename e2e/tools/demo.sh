#!/usr/bin/env bash
# `make demo`: the product end to end on the local infrastructure. Installs the operator with
# its Helm chart, produces JSON click events, applies a KafkaTable (Delta Lake on S3/MinIO,
# partitioned by event day, autoscaled by lag), follows `kubectl get kafkatables` until
# everything is committed, and reads the table back with deltalake and polars.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export KAFKATABLE_CACHE=${KAFKATABLE_CACHE:-$HOME/.cache/kafkatable}
export KAFKATABLE_RUN=${KAFKATABLE_RUN:-$KAFKATABLE_CACHE/run}
"$here/infra.sh" up
# shellcheck disable=SC1090,SC1091
source "$KAFKATABLE_RUN/env"
export KUBECONFIG
stamp=$(date +%s)
ns=demo-$stamp
topic=demo-clicks-$stamp
records=20000
kubectl() { "$KT_KUBECTL" "$@"; }

echo "== namespace $ns, a Secret with the S3 credentials, bucket s3://demo"
kubectl create namespace "$ns" >/dev/null
kubectl -n "$ns" create secret generic s3 \
  --from-literal=accessKeyId="$KT_S3_ACCESS_KEY" --from-literal=secretAccessKey="$KT_S3_SECRET_KEY" >/dev/null
"$KT_PYTHON" "$here/s3_bucket.py" "$KT_S3_ENDPOINT" "$KT_S3_ACCESS_KEY" "$KT_S3_SECRET_KEY" demo

echo "== helm install kafkatable-operator (watching $ns)"
"$KT_HELM" install kafkatable "$root/charts/kafkatable-operator" -n "$ns" --wait --timeout 120s \
  --set watchNamespace="$ns" --set statusIntervalSeconds=2 --set logFormat=text >/dev/null
kubectl -n "$ns" get deployment,pods -l app.kubernetes.io/name=kafkatable-operator
echo "(pods run from the images: $(kubectl -n "$ns" get pods -l app.kubernetes.io/name=kafkatable-operator \
  -o jsonpath='{.items[0].status.containerStatuses[0].imageID}'))"

"$KT_PYTHON" "$here/demo.py" produce "$KT_KAFKA_BOOTSTRAP" "$topic" "$records"

cat > "$KAFKATABLE_RUN/demo-clicks.yaml" <<YAML
apiVersion: kafkatable.io/v1alpha1
kind: KafkaTable
metadata: {name: clicks, namespace: $ns}
spec:
  source: {brokers: "$KT_KAFKA_BOOTSTRAP", topic: $topic}
  table:
    format: delta
    location: s3://demo/$topic
    storage: {endpoint: "$KT_S3_ENDPOINT", region: us-east-1, pathStyle: true, credentialsSecretRef: {name: s3}}
    eventTime: {field: ts, format: epochMillis}
    partitionBy: [{field: ts, transform: day}]
  commit: {interval: 2s}
  scaling: {minReplicas: 1, maxReplicas: 3, lagPerReplica: 5000, scaleDownStabilization: 30s}
YAML
echo; echo "== kubectl apply -f clicks.yaml"; cat "$KAFKATABLE_RUN/demo-clicks.yaml"
kubectl apply -f "$KAFKATABLE_RUN/demo-clicks.yaml"

echo; echo "== kubectl get kafkatables -w (until every record is committed)"
deadline=$((SECONDS + 240))
last=""
while :; do
  row=$(kubectl -n "$ns" get kt clicks --no-headers 2>/dev/null || true)
  [[ $row != "$last" ]] && { echo "$row"; last=$row; }
  read -r _ ready _ lag _ <<<"$row" || true
  [[ $ready == True && $lag == 0 ]] && break
  ((SECONDS < deadline)) || { echo "not ready after 240 s; kubectl -n $ns describe kt clicks" >&2; exit 1; }
  sleep 1
done

echo; echo "== events"
kubectl -n "$ns" get events --field-selector involvedObject.kind=KafkaTable \
  -o custom-columns=REASON:.reason,MESSAGE:.message --sort-by=.metadata.creationTimestamp 2>/dev/null || true
echo; echo "== status (kubectl get kt clicks -o yaml)"
kubectl -n "$ns" get kt clicks -o jsonpath='{.status}' | "$KT_PYTHON" -c \
  'import json,sys; s=json.load(sys.stdin); print(json.dumps({k: s.get(k) for k in ["replicas","readyReplicas","desiredReplicas","partitions","lag","syncPoints","tableVersion","lastCommitTime","freshnessSeconds","lastScaleReason"]}, indent=1))'

"$KT_PYTHON" "$here/demo.py" show "s3://demo/$topic" "$KT_S3_ENDPOINT" "$KT_S3_ACCESS_KEY" "$KT_S3_SECRET_KEY" "$topic" "$records"
echo
echo "The table keeps ingesting new events. Explore: kubectl -n $ns describe kt clicks"
echo "(KUBECONFIG=$KUBECONFIG, kubectl at $KT_KUBECTL). Stop everything: make infra-down"
