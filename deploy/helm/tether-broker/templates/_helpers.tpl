{{- define "tether-broker.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name, short enough for the pods' names (NAME-N) to be tailnet hostnames. */}}
{{- define "tether-broker.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tether-broker.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tether-broker.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tether-broker.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tether-broker.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: broker
{{- end -}}

{{- define "tether-broker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tether-broker.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tether-broker.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "tether-broker.dataDir" -}}/var/lib/tether-broker{{- end -}}

{{/*
The secrets mounted under /etc/tether/secrets: file name → {value, existingSecret, key}.
The signing key is mounted apart, into the data directory.
*/}}
{{- define "tether-broker.secretFiles" -}}
{{- $files := dict "auth-key" .Values.tailnet.authKey "store-dsn" .Values.store.dsn "network-seal-key" .Values.networkSealKey -}}
{{- range .Values.extraSecrets -}}
{{- if or (not .name) (hasKey $files .name) (eq .name "broker.key") -}}
{{- fail (printf "extraSecrets: name %q: want a file name of its own, such as oidc-vendor-secret" (toString .name)) -}}
{{- end -}}
{{- $_ := set $files .name (dict "value" .value "existingSecret" .existingSecret "key" (default .name .key)) -}}
{{- end -}}
{{- toYaml $files -}}
{{- end -}}

{{/* Whether the chart makes the Opaque Secret: some secret has a value. */}}
{{- define "tether-broker.managedSecret" -}}
{{- $files := include "tether-broker.secretFiles" . | fromYaml -}}
{{- $_ := set $files "broker.key" .Values.signingKey -}}
{{- range $name, $s := $files -}}
{{- if and $s.value $s.existingSecret -}}
{{- fail (printf "secret %s: give value or existingSecret, not both" $name) -}}
{{- end -}}
{{- if $s.value }}true{{ end -}}
{{- end -}}
{{- end -}}

{{- define "tether-broker.tlsSecretName" -}}
{{- if and .Values.tls.existingSecret (or .Values.tls.cert .Values.tls.key) -}}
{{- fail "tls: give existingSecret or cert and key, not both" -}}
{{- end -}}
{{- if .Values.tls.existingSecret -}}
{{- .Values.tls.existingSecret -}}
{{- else if and .Values.tls.cert .Values.tls.key -}}
{{- printf "%s-tls" (include "tether-broker.fullname" .) -}}
{{- else -}}
{{- fail "tls: the broker serves its API over TLS on a pod address; give tls.existingSecret (a kubernetes.io/tls Secret, e.g. from cert-manager) or tls.cert and tls.key" -}}
{{- end -}}
{{- end -}}

{{/* The broker's config file: values.config plus what the chart sets. */}}
{{- define "tether-broker.config" -}}
{{- $owned := list "data_dir" "listen" "tls_cert" "tls_key" "store_driver" "store_dsn" "control_url" "auth_key" "network_seal_key" "hostname" "admin_token" -}}
{{- range $owned -}}
{{- if hasKey $.Values.config . -}}
{{- fail (printf "config.%s is set by the chart: see values.yaml (tls, store, tailnet, networkSealKey)" .) -}}
{{- end -}}
{{- end -}}
{{- if not .Values.config.identity -}}
{{- fail "config.identity: the broker trusts only the OpenID Connect issuers listed there (docs/operations.md, Identity providers)" -}}
{{- end -}}
{{- if not (or .Values.store.dsn.value .Values.store.dsn.existingSecret) -}}
{{- fail "store.dsn: give the PostgreSQL connection string (value) or the Secret holding it (existingSecret)" -}}
{{- end -}}
{{- if not (or .Values.tailnet.authKey.value .Values.tailnet.authKey.existingSecret) -}}
{{- fail "tailnet.authKey: give the broker's tailnet pre-auth key (value) or the Secret holding it (existingSecret)" -}}
{{- end -}}
{{- if not .Values.tailnet.controlUrl -}}
{{- fail "tailnet.controlUrl: give the tailnet's coordination server" -}}
{{- end -}}
{{- if gt (int .Values.replicas) 1 -}}
{{- if not (or .Values.signingKey.value .Values.signingKey.existingSecret) -}}
{{- fail "signingKey: several replicas must share the broker's signing key; give it (value) or the Secret holding it (existingSecret)" -}}
{{- end -}}
{{- if not (or .Values.networkSealKey.value .Values.networkSealKey.existingSecret) -}}
{{- fail "networkSealKey: several replicas must share the network seal key; give it (value) or the Secret holding it (existingSecret)" -}}
{{- end -}}
{{- end -}}
{{- $c := deepCopy .Values.config -}}
{{- $_ := set $c "data_dir" (include "tether-broker.dataDir" .) -}}
{{- $_ := set $c "listen" (printf "0.0.0.0:%d" (int .Values.port)) -}}
{{- $_ := set $c "tls_cert" "/etc/tether/tls/tls.crt" -}}
{{- $_ := set $c "tls_key" "/etc/tether/tls/tls.key" -}}
{{- $_ := set $c "store_driver" "postgres" -}}
{{- $_ := set $c "store_dsn" "file:/etc/tether/secrets/store-dsn" -}}
{{- $_ := set $c "control_url" .Values.tailnet.controlUrl -}}
{{- $_ := set $c "auth_key" "file:/etc/tether/secrets/auth-key" -}}
{{- if or .Values.networkSealKey.value .Values.networkSealKey.existingSecret -}}
{{- $_ := set $c "network_seal_key" "file:/etc/tether/secrets/network-seal-key" -}}
{{- end -}}
{{- toPrettyJson $c -}}
{{- end -}}
