{{/* At most 54 characters, so that "<fullname>-metrics" is still a valid Service name. */}}
{{- define "virtrigaud.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}

{{- define "virtrigaud.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector of the controller pods; the bundled Redis has its own component. */}}
{{- define "virtrigaud.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "virtrigaud.redisSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{- define "virtrigaud.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* True (non-empty) when the chart deploys its own Redis. */}}
{{- define "virtrigaud.bundledRedis" -}}
{{- if and (not .Values.redis.url) (not .Values.redis.urlSecret.name) .Values.redis.bundled.enabled -}}
true
{{- end -}}
{{- end -}}

{{/*
The metrics check used by the probes. The process serves /metrics (prometheus_client)
on 127.0.0.1 only, so the kubelet cannot reach it over the pod IP: probe from inside
the container instead.
*/}}
{{- define "virtrigaud.metricsProbe" -}}
exec:
  command:
    - python
    - -c
    - {{ printf "import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d/metrics', timeout=5).read()" (int .Values.metrics.port) | quote }}
{{- end -}}

{{/* The --redis-url argument; empty when the URL comes from a Secret or no Redis is set. */}}
{{- define "virtrigaud.redisURL" -}}
{{- if .Values.redis.urlSecret.name -}}
{{- else if .Values.redis.url -}}
{{ .Values.redis.url }}
{{- else if include "virtrigaud.bundledRedis" . -}}
redis://{{ include "virtrigaud.fullname" . }}-redis:6379/0
{{- end -}}
{{- end -}}
