{{/* The chart's name. */}}
{{- define "tether-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the prefix of every object. */}}
{{- define "tether-agent.fullname" -}}
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
{{- end -}}

{{- define "tether-agent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tether-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tether-agent.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tether-agent.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: agent
{{- end -}}

{{- define "tether-agent.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tether-agent.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tether-agent.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The secret flags: flag name → values key under agent. Each is mounted at
/etc/tether/secrets/FLAG and passed as file:PATH, or as a plain PATH to
--join and --clickhouse-password-file, which take one.
*/}}
{{- define "tether-agent.secretFlags" -}}
auth-key: authKey
pairing-token: pairingToken
join: join
clickhouse-password-file: clickhousePassword
{{- end -}}

{{/* Whether the chart creates a Secret: some secret flag has a value. */}}
{{- define "tether-agent.managedSecret" -}}
{{- range $flag, $key := include "tether-agent.secretFlags" . | fromYaml -}}
{{- $s := index $.Values.agent $key -}}
{{- if and $s.value $s.existingSecret -}}
{{- fail (printf "agent.%s: give value or existingSecret, not both" $key) -}}
{{- end -}}
{{- if $s.value }}true{{ end -}}
{{- end -}}
{{- end -}}

{{/* A flag's value as text: integers without an exponent, lists comma-joined. */}}
{{- define "tether-agent.flagValue" -}}
{{- if kindIs "float64" . -}}
{{- if eq (float64 (int64 .)) . -}}{{ int64 . }}{{- else -}}{{ . }}{{- end -}}
{{- else if kindIs "slice" . -}}
{{- join "," . -}}
{{- else -}}
{{- . -}}
{{- end -}}
{{- end -}}

{{/*
The plain flags of 'agent run': flag name → values key under agent. Left out
when empty, so the agent's default applies.
*/}}
{{- define "tether-agent.plainFlags" -}}
hostname: hostname
control-url: controlUrl
broker-name: brokerName
broker-tag: brokerTag
broker-key: brokerKey
health-addr: healthAddr
clickhouse-url: clickhouseUrl
clickhouse-user: clickhouseUser
prometheus-url: prometheusUrl
max-execution-time: maxExecutionTime
max-result-rows: maxResultRows
max-result-bytes: maxResultBytes
max-memory-usage: maxMemoryUsage
max-calls-per-grant: maxCallsPerGrant
memory-limit: memoryLimit
approver-issuer: approverIssuer
approver-audience: approverAudience
approver-group: approverGroup
approver-groups-claim: approverGroupsClaim
approvals-required: approvalsRequired
break-glass: breakGlass
timeout: timeout
log-level: logLevel
{{- end -}}

{{/* The container's arguments: 'agent run' and its flags. */}}
{{- define "tether-agent.args" -}}
{{- $a := .Values.agent -}}
{{- if not $a.stateDir }}{{ fail "agent.stateDir: want the directory the state volume is mounted at, such as /var/lib/tether-agent" }}{{ end -}}
{{- if and (or $a.join.value $a.join.existingSecret) (or $a.controlUrl $a.brokerName $a.brokerTag $a.brokerKey $a.authKey.value $a.authKey.existingSecret) -}}
{{- fail "agent.join: give either a join file or agent.controlUrl/authKey/brokerName/brokerTag/brokerKey, not both" -}}
{{- end -}}
- run
- --state-dir={{ $a.stateDir }}
{{- range $flag, $key := include "tether-agent.plainFlags" . | fromYaml }}
{{- $v := index $a $key }}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v "")) (and (kindIs "slice" $v) (eq (len $v) 0))) }}
- {{ printf "--%s=%s" $flag (include "tether-agent.flagValue" $v) | quote }}
{{- end }}
{{- end }}
{{- range $flag, $key := include "tether-agent.secretFlags" . | fromYaml }}
{{- $s := index $a $key }}
{{- if or $s.value $s.existingSecret }}
{{- if has $flag (list "join" "clickhouse-password-file") }}
- --{{ $flag }}=/etc/tether/secrets/{{ $flag }}
{{- else }}
- --{{ $flag }}=file:/etc/tether/secrets/{{ $flag }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The projected volume's sources: one item per secret flag given. */}}
{{- define "tether-agent.secretSources" -}}
{{- $managed := include "tether-agent.fullname" . -}}
{{- range $flag, $key := include "tether-agent.secretFlags" . | fromYaml }}
{{- $s := index $.Values.agent $key }}
{{- if or $s.value $s.existingSecret }}
- secret:
    name: {{ default $managed $s.existingSecret }}
    items:
      - key: {{ required (printf "agent.%s.key: want the key of the Secret holding it" $key) $s.key }}
        path: {{ $flag }}
{{- end }}
{{- end }}
{{- end -}}
