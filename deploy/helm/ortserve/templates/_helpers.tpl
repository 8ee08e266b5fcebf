{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "ortserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name. Kept to 54 characters so that "-headless" still fits in 63. */}}
{{- define "ortserve.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ortserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "ortserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ortserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ortserve.labels" -}}
helm.sh/chart: {{ include "ortserve.chart" . }}
{{ include "ortserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: inference-server
{{- end }}

{{- define "ortserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ortserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ortserve.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
PromQL label matchers that select this release's pods, for the KEDA query. Prometheus must attach
the namespace and pod labels (a ServiceMonitor/PodMonitor does; so does the usual kubernetes-pods job).
*/}}
{{- define "ortserve.podMatchers" -}}
namespace="{{ .Release.Namespace }}",pod=~"{{ include "ortserve.fullname" . }}-[a-z0-9]+-[a-z0-9]+"
{{- end }}

{{/* Whether the HTTP port needs TLS or credentials, so that probes go to the plaintext health port. */}}
{{- define "ortserve.healthPortOn" -}}
{{- if or (and .Values.tls.enabled .Values.tls.http) .Values.auth.configSecretName }}true{{- end }}
{{- end }}

{{/* The ORTSERVE_* variables of one TLS port: (list "GRPC"|"HTTP"|"METRICS" .Values.tls mutual). */}}
{{- define "ortserve.tlsEnv" -}}
{{- $port := index . 0 }}{{- $tls := index . 1 }}{{- $mutual := index . 2 }}
- name: ORTSERVE_{{ $port }}_{{ if $mutual }}USE_SSL_MUTUAL{{ else }}USE_SSL{{ end }}
  value: "true"
- name: ORTSERVE_{{ $port }}_SERVER_CERT
  value: {{ printf "%s/tls.crt" $tls.mountPath | quote }}
- name: ORTSERVE_{{ $port }}_SERVER_KEY
  value: {{ printf "%s/tls.key" $tls.mountPath | quote }}
{{- if $mutual }}
- name: ORTSERVE_{{ $port }}_ROOT_CERT
  value: {{ printf "%s/ca.crt" $tls.mountPath | quote }}
{{- end }}
{{- end }}

{{/* Refuse values that cannot work together. */}}
{{- define "ortserve.validate" -}}
{{- $grace := int .Values.terminationGracePeriodSeconds }}
{{- $needed := add (int .Values.server.exitTimeoutSecs) (int .Values.lifecycle.preStopSleepSeconds) }}
{{- if le $grace $needed }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed lifecycle.preStopSleepSeconds + server.exitTimeoutSecs (%d): Kubernetes would SIGKILL the server mid-drain" $grace $needed) }}
{{- end }}
{{- if and (eq .Values.modelRepository.source "volume") (empty .Values.modelRepository.volume) }}
{{- fail "modelRepository.source=volume needs modelRepository.volume (a volume source, e.g. persistentVolumeClaim)" }}
{{- end }}
{{- if and (eq .Values.modelRepository.source "initContainer") (empty .Values.modelRepository.initContainer.image) }}
{{- fail "modelRepository.source=initContainer needs modelRepository.initContainer.image" }}
{{- end }}
{{- if and .Values.tls.enabled (empty .Values.tls.secretName) }}
{{- fail "tls.enabled needs tls.secretName (a kubernetes.io/tls Secret: tls.crt, tls.key, and ca.crt with tls.mutual)" }}
{{- end }}
{{- if and .Values.tls.enabled .Values.tls.grpc (eq .Values.probes.readinessType "grpc") }}
{{- fail "probes.readinessType=grpc cannot probe a TLS gRPC port (the kubelet's gRPC probe speaks plaintext): use readinessType http, which goes to the health port" }}
{{- end }}
{{- $ports := list (int .Values.server.httpPort) (int .Values.server.grpcPort) (int .Values.server.metricsPort) }}
{{- if and (include "ortserve.healthPortOn" .) (has (int .Values.healthPort) $ports) }}
{{- fail "healthPort must differ from the HTTP, gRPC and metrics ports" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not exceed autoscaling.maxReplicas" }}
{{- end }}
{{- end }}
