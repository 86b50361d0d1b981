{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "warren-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name appended unless the release name already contains it. */}}
{{- define "warren-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "warren-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "warren-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "warren-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "warren-gateway.labels" -}}
helm.sh/chart: {{ include "warren-gateway.chart" . }}
{{ include "warren-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: warren
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "warren-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "warren-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "warren-gateway.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The TLS Secret's name: the chart's own, or tls.existingSecret. Fails unless exactly one source is set. */}}
{{- define "warren-gateway.tlsSecretName" -}}
{{- $t := .Values.tls }}
{{- if and $t.existingSecret (or $t.cert $t.key) }}
{{- fail "set either tls.existingSecret or tls.cert and tls.key, not both" }}
{{- else if $t.existingSecret }}
{{- $t.existingSecret }}
{{- else if and $t.cert $t.key }}
{{- printf "%s-tls" (include "warren-gateway.fullname" .) }}
{{- else }}
{{- fail "the gateway serves HTTPS only: set tls.cert and tls.key (PEM), or tls.existingSecret (a kubernetes.io/tls Secret)" }}
{{- end }}
{{- end }}

{{/* Comma-separated key file paths under dir for a list of keys. */}}
{{- define "warren-gateway.keyFiles" -}}
{{- $dir := index . 0 }}
{{- range $i, $_ := index . 1 }}{{ if $i }},{{ end }}{{ $dir }}/key-{{ $i }}.pem{{ end }}
{{- end }}

{{/* The gateway key's Secret name and key: the chart's own, or gatewayKey.existingSecret. Fails unless exactly one. */}}
{{- define "warren-gateway.gatewayKeySecretName" -}}
{{- $k := .Values.gatewayKey }}
{{- if and $k.value $k.existingSecret }}
{{- fail "set only one of gatewayKey.value and gatewayKey.existingSecret" }}
{{- else if $k.existingSecret }}
{{- $k.existingSecret }}
{{- else if $k.value }}
{{- printf "%s-gateway-key" (include "warren-gateway.fullname" .) }}
{{- else }}
{{- fail "gatewayKey.value or gatewayKey.existingSecret is required: the gateway's own Ed25519 key (signing.key from `warren keygen --out DIR`), which signs the assertion each request carries to its connector; give DIR/signing.pub to the connectors (gatewayKeys)" }}
{{- end }}
{{- end }}

{{- define "warren-gateway.gatewayKeySecretKey" -}}
{{- if .Values.gatewayKey.existingSecret }}{{ .Values.gatewayKey.existingSecretKey }}{{ else }}signing.key{{ end }}
{{- end }}

{{/* The audit signing key's Secret name, "" without a key: the chart's own, or auditSigningKey.existingSecret.
Fails with both, or with the gateway key itself (a key pair of its own keeps the two roles apart). No auditLog is
needed: the gateway's audit log defaults to standard output. */}}
{{- define "warren-gateway.auditKeySecretName" -}}
{{- $k := .Values.auditSigningKey }}
{{- $g := .Values.gatewayKey }}
{{- if and $k.value $k.existingSecret }}
{{- fail "set only one of auditSigningKey.value and auditSigningKey.existingSecret" }}
{{- end }}
{{- if or (and $k.value (eq (trim $k.value) (trim $g.value))) (and $k.existingSecret (eq $k.existingSecret $g.existingSecret) (eq $k.existingSecretKey $g.existingSecretKey)) }}
{{- fail "auditSigningKey is the gatewayKey: give the audit log a key pair of its own (`warren keygen --out DIR`, DIR/signing.key)" }}
{{- end }}
{{- if $k.existingSecret }}
{{- $k.existingSecret }}
{{- else if $k.value }}
{{- printf "%s-audit-key" (include "warren-gateway.fullname" .) }}
{{- end }}
{{- end }}

{{- define "warren-gateway.auditKeySecretKey" -}}
{{- if .Values.auditSigningKey.existingSecret }}{{ .Values.auditSigningKey.existingSecretKey }}{{ else }}signing.key{{ end }}
{{- end }}
