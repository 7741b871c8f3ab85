{{- define "kafkatable.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kafkatable.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kafkatable.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kafkatable.serviceAccountName" -}}
{{- default (include "kafkatable.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The permissions on KafkaTables and their children, for a ClusterRole or a Role. */}}
{{- define "kafkatable.rules" -}}
- apiGroups: ["kafkatable.io"]
  resources: ["kafkatables"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["kafkatable.io"]
  resources: ["kafkatables/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["kafkatable.io"]
  resources: ["kafkatables/finalizers"]
  verbs: ["update"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["configmaps", "services"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "create", "patch"]
# Pods (watched): restarts and the ingesters' /status addresses.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# Secrets named by a KafkaTable's SASL or TLS settings, to read the topic's offsets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
