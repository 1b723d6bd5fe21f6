{{/* Name of the chart's objects. */}}
{{- define "mattermost-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end }}

{{/* Release-unique name: the release name if it contains the chart name, else release-chart. */}}
{{- define "mattermost-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- define "mattermost-operator.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end }}

{{- define "mattermost-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mattermost-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mattermost-operator.labels" -}}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{ include "mattermost-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mattermost-operator.serviceAccountName" -}}
{{- default (include "mattermost-operator.fullname" .) .Values.mattermostOperator.serviceAccount.name -}}
{{- end }}

{{/* The HTTP port, from --metrics-addr in the args (the Go chart sets it there). */}}
{{- define "mattermost-operator.port" -}}
{{- $port := "8383" -}}
{{- range .Values.mattermostOperator.args -}}
{{- if or (hasPrefix "--metrics-addr=" .) (hasPrefix "-metrics-addr=" .) (hasPrefix "--http-addr=" .) -}}
{{- $port = regexFind "[0-9]+$" . -}}
{{- end -}}
{{- end -}}
{{- $port -}}
{{- end }}

{{/*
What the operator does in the namespaces it watches. Used by the ClusterRole, or by one Role per
watched namespace. Each verb is used by the code; tests run the operator under exactly these rules
and fail on any denied request.
*/}}
{{- define "mattermost-operator.rules" -}}
# The custom resources: read, and write status (the spec is never written). create/patch/delete
# only by a ClusterInstallation migration (create the Mattermost, its finalizer, delete on revert).
- apiGroups: [installation.mattermost.com]
  resources: [mattermosts]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [installation.mattermost.com]
  resources: [mattermosts/status]
  verbs: [get, patch]
# Legacy ClusterInstallations: reconciled, migrated, and deleted when their migration completes.
- apiGroups: [mattermost.com]
  resources: [clusterinstallations]
  verbs: [get, list, watch, patch, delete]
- apiGroups: [mattermost.com]
  resources: [clusterinstallations/status]
  verbs: [get, patch]
# Children, written with server-side apply (patch; create when new) and deleted only when owned.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services, serviceaccounts, persistentvolumeclaims]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
# spec.monitoring: the PodMonitor of an installation, applied like the other children (get then
# server-side apply) and deleted when monitoring is turned off. Whether its CRD exists is asked
# through API discovery, which needs no rule.
- apiGroups: [monitoring.coreos.com]
  resources: [podmonitors]
  verbs: [get, create, patch, delete]
# Rollout progress; a completed migration deletes the orphaned legacy ReplicaSets.
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [list, watch, delete]
# Referenced secrets: key checks (get) and a metadata-only watch; patch moves the owner reference
# of secrets a migrated ClusterInstallation owned.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, patch]
# A label-selected pod cache: why new pods cannot start (FailedCreate, pull errors, crash loops,
# unschedulable) and failed update-Job messages; cluster-wide, the capacity preflight lists pods.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# Events.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
