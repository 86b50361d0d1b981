{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "warren-connector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name, with the chart name appended unless the release name already contains it. */}}
{{- define "warren-connector.fullname" -}}
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

{{- define "warren-connector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "warren-connector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "warren-connector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "warren-connector.labels" -}}
helm.sh/chart: {{ include "warren-connector.chart" . }}
{{ include "warren-connector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: connector
app.kubernetes.io/part-of: warren
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "warren-connector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "warren-connector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "warren-connector.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The token Secret's name and key: the chart's own, or token.existingSecret. Fails unless exactly one is set. */}}
{{- define "warren-connector.tokenSecretName" -}}
{{- if and .Values.token.value .Values.token.existingSecret }}
{{- fail "set only one of token.value and token.existingSecret" }}
{{- else if .Values.token.existingSecret }}
{{- .Values.token.existingSecret }}
{{- else if .Values.token.value }}
{{- printf "%s-token" (include "warren-connector.fullname" .) }}
{{- else }}
{{- fail "token.value or token.existingSecret is required: the connector token made by `warren token connector --key KEY --cluster CLUSTER`" }}
{{- end }}
{{- end }}

{{- define "warren-connector.tokenSecretKey" -}}
{{- if .Values.token.existingSecret }}{{ .Values.token.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{- define "warren-connector.gatewayURL" -}}
{{- $url := required "gateway.url is required: the gateway's URL, https://HOST[:PORT]" .Values.gateway.url }}
{{- if not (hasPrefix "https://" $url) }}
{{- fail (printf "gateway.url %q must start with https://" $url) }}
{{- end }}
{{- $url }}
{{- end }}

{{/* The port of a URL: explicit, or the scheme's default. */}}
{{- define "warren-connector.urlPort" -}}
{{- $u := urlParse . }}
{{- $host := $u.host }}
{{- if regexMatch ":[0-9]+$" $host }}
{{- regexFind "[0-9]+$" $host }}
{{- else if eq $u.scheme "http" }}80
{{- else }}443
{{- end }}
{{- end }}

{{/* The port egress to the gateway needs: networkPolicy.gateway.port, else the proxy's, else the gateway's. */}}
{{- define "warren-connector.gatewayPort" -}}
{{- if .Values.networkPolicy.gateway.port }}
{{- .Values.networkPolicy.gateway.port }}
{{- else if .Values.proxy.https }}
{{- include "warren-connector.urlPort" .Values.proxy.https }}
{{- else if and .Values.proxy.existingSecret .Values.networkPolicy.enabled }}
{{- fail "proxy.existingSecret hides the proxy's port from the chart: set networkPolicy.gateway.port (and networkPolicy.gateway.cidrs) to the proxy's" }}
{{- else }}
{{- include "warren-connector.urlPort" (include "warren-connector.gatewayURL" .) }}
{{- end }}
{{- end }}

{{/* NO_PROXY: the API server's service address first, then proxy.noProxy (a string or a list). */}}
{{- define "warren-connector.noProxy" -}}
{{- $extra := .Values.proxy.noProxy }}
{{- if kindIs "slice" $extra }}{{ $extra = join "," $extra }}{{ end }}
{{- $items := list "$(KUBERNETES_SERVICE_HOST)" "kubernetes.default.svc" }}
{{- if $extra }}{{ $items = append $items $extra }}{{ end }}
{{- join "," $items }}
{{- end }}

{{/* The pinned gateway keys, as a JSON list; fails without them, or with the removed issuerKeys. */}}
{{- define "warren-connector.gatewayKeys" -}}
{{- if .Values.issuerKeys }}
{{- fail "issuerKeys was removed: the connector no longer sees caller tokens (the gateway keeps them); set gatewayKeys to the gateway's public key (the signing.pub of its gatewayKey), whose assertion of each request the connector verifies" }}
{{- end }}
{{- if not .Values.gatewayKeys }}
{{- fail "gatewayKeys is required: the gateway's public key(s), the signing.pub of its gatewayKey (`warren keygen`); the connector serves only requests the gateway signed an assertion of" }}
{{- end }}
{{- toJson .Values.gatewayKeys }}
{{- end }}

{{/* Whether the connector runs with a policy: policy.rules, or the node mode's podSpec rule. */}}
{{- define "warren-connector.hasPolicy" -}}
{{- if or .Values.policy.rules .Values.acquisition.node.enabled }}true{{ end }}
{{- end }}

{{/* The policy file: policy.rules (or, without them and with the node mode, everything but named-only resources,
and pods/ephemeralcontainers with the ephemeral mode), and for the node mode what it needs in its namespace and the
podSpec rule that keeps pod creation there to warren's collector pod. */}}
{{- define "warren-connector.policy" -}}
{{- $rules := .Values.policy.rules | default list -}}
{{- $node := .Values.acquisition.node -}}
{{- if $node.enabled -}}
{{- if not $node.images }}{{ fail "acquisition.node.images: list warren's collector image(s), each pinned by digest (NAME@sha256:...)" }}{{ end -}}
{{- if not $rules -}}
{{- $rules = list (dict "verbs" (list "*") "apiGroups" (list "*") "resources" (list "*")) -}}
{{- if .Values.acquisition.ephemeral.enabled }}{{ $rules = append $rules (dict "verbs" (list "patch") "resources" (list "pods/ephemeralcontainers")) }}{{ end -}}
{{- end -}}
{{- $rules = append $rules (dict "verbs" (list "get" "delete") "resources" (list "pods") "namespaces" (list $node.namespace)) -}}
{{- $rules = append $rules (dict "verbs" (list "create" "get") "resources" (list "pods/attach") "namespaces" (list $node.namespace)) -}}
{{- $spec := dict "kind" "warren-collector" "images" $node.images -}}
{{- if $node.hostPaths }}{{ $_ := set $spec "hostPaths" $node.hostPaths }}{{ end -}}
{{- $rules = append $rules (dict "verbs" (list "create") "resources" (list "pods") "namespaces" (list $node.namespace) "podSpec" $spec) -}}
{{- end -}}
{{- dict "rules" $rules | toYaml -}}
{{- end }}

{{/* The audit signing key's Secret name, "" without a key: the chart's own, or auditSigningKey.existingSecret.
Fails with both, or without auditLog, which the binary refuses too (--audit-signing-key needs --audit-log). */}}
{{- define "warren-connector.auditKeySecretName" -}}
{{- $k := .Values.auditSigningKey }}
{{- if and $k.value $k.existingSecret }}
{{- fail "set only one of auditSigningKey.value and auditSigningKey.existingSecret" }}
{{- end }}
{{- if and (or $k.value $k.existingSecret) (not .Values.auditLog) }}
{{- fail "auditSigningKey needs auditLog: the key signs checkpoints of the audit log, and without auditLog the connector keeps none; set auditLog (e.g. /dev/stdout) or leave auditSigningKey empty" }}
{{- end }}
{{- if $k.existingSecret }}
{{- $k.existingSecret }}
{{- else if $k.value }}
{{- printf "%s-audit-key" (include "warren-connector.fullname" .) }}
{{- end }}
{{- end }}

{{- define "warren-connector.auditKeySecretKey" -}}
{{- if .Values.auditSigningKey.existingSecret }}{{ .Values.auditSigningKey.existingSecretKey }}{{ else }}signing.key{{ end }}
{{- end }}
