#!/usr/bin/env bash
# `make demo`: starts the real infrastructure and shows what runs where. The product itself
# (operator and ingesters) joins the demo as it is built.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/infra.sh" up
# shellcheck disable=SC1090,SC1091
source "$KAFKATABLE_RUN/env"
kubectl=("$KT_KUBECTL" --kubeconfig "$KUBECONFIG")
echo
echo "== Kubernetes (API server, controller manager, process kubelet)"
"${kubectl[@]}" get nodes -o wide
echo
echo "== Addresses (from $KAFKATABLE_RUN/env)"
printf '  %-28s %s\n' "Kafka (PLAINTEXT)" "$KT_KAFKA_BOOTSTRAP" \
  "Kafka (SASL/SCRAM-SHA-512)" "$KT_KAFKA_SASL_BOOTSTRAP  user $KT_KAFKA_SASL_USERNAME" \
  "S3 (MinIO)" "$KT_S3_ENDPOINT" \
  "Iceberg REST catalog" "$KT_ICEBERG_REST_URI  warehouse $KT_ICEBERG_WAREHOUSE" \
  "Schema registry" "$KT_REGISTRY_URL" \
  "kubectl" "$KT_KUBECTL --kubeconfig $KUBECONFIG"
echo
"$here/infra.sh" status
echo
echo "The operator and ingesters are not implemented yet; stop everything with: make infra-down"
