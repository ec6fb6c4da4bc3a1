{{/*
Name helpers. `kubelock.fullname` prefixes every object; with the release name `kubelock` it is
`kubelock`, so the cluster-scoped objects get the names of the API contract (kubelock-agent, ...).
*/}}
{{- define "kubelock.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubelock.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kubelock.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "kubelock.labels" -}}
helm.sh/chart: {{ include "kubelock.chart" . }}
{{ include "kubelock.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kubelock
{{- end }}

{{/* Labels that select the operator pods; never change them (Deployment selectors are immutable). */}}
{{- define "kubelock.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubelock.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubelock.operatorName" -}}
{{- printf "%s-operator" (include "kubelock.fullname" .) }}
{{- end }}

{{- define "kubelock.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubelock.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubelock.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Cross-field checks that values.schema.json cannot express. */}}
{{- define "kubelock.validate" -}}
{{- if gt (int .Values.resourceLockTimeout) (int .Values.maxTtlSeconds) }}
{{- fail (printf "resourceLockTimeout (%v) must not exceed maxTtlSeconds (%v)" .Values.resourceLockTimeout .Values.maxTtlSeconds) }}
{{- end }}
{{- if and .Values.metrics.enabled (eq (int .Values.metrics.port) (int .Values.healthPort)) }}
{{- fail "metrics.port and healthPort must differ" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled" }}
{{- end }}
{{- end }}
