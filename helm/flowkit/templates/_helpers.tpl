{{/* Names, labels and the settings several templates share. */}}

{{- define "flowkit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flowkit.fullname" -}}
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

{{- define "flowkit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "flowkit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flowkit
{{- end }}

{{/* Selector labels of one component: include with (list $ "operator"). */}}
{{- define "flowkit.selectorLabels" -}}
{{- $root := index . 0 }}
app.kubernetes.io/name: {{ include "flowkit.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "flowkit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flowkit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "flowkit.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Exactly one source for Kafka and one for MongoDB (the schema says so too; this also
     holds with --skip-schema-validation). */}}
{{- define "flowkit.checkServices" -}}
{{- $k := .Values.kafka }}
{{- if and $k.bootstrap $k.bundled.enabled }}
{{- fail "kafka: set either kafka.bootstrap (an existing Kafka) or kafka.bundled.enabled=true, not both" }}
{{- end }}
{{- if not (or $k.bootstrap $k.bundled.enabled) }}
{{- fail "kafka: set kafka.bootstrap (host:port of an existing Kafka) or kafka.bundled.enabled=true" }}
{{- end }}
{{- $m := .Values.mongodb }}
{{- $set := 0 }}
{{- if $m.url }}{{ $set = add1 $set }}{{ end }}
{{- if $m.existingSecret }}{{ $set = add1 $set }}{{ end }}
{{- if $m.bundled.enabled }}{{ $set = add1 $set }}{{ end }}
{{- if ne (int $set) 1 }}
{{- fail "mongodb: set exactly one of mongodb.url, mongodb.existingSecret and mongodb.bundled.enabled=true" }}
{{- end }}
{{- end }}

{{- define "flowkit.kafkaServiceName" -}}
{{- printf "%s-kafka" (include "flowkit.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flowkit.mongodbServiceName" -}}
{{- printf "%s-mongodb" (include "flowkit.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "flowkit.kafkaBootstrap" -}}
{{- if .Values.kafka.bundled.enabled }}
{{- printf "%s.%s.svc:9092" (include "flowkit.kafkaServiceName" .) .Release.Namespace }}
{{- else }}
{{- .Values.kafka.bootstrap }}
{{- end }}
{{- end }}

{{/* The Secret holding the MongoDB URL, and its key. */}}
{{- define "flowkit.mongoSecretName" -}}
{{- if .Values.mongodb.existingSecret }}
{{- .Values.mongodb.existingSecret }}
{{- else }}
{{- printf "%s-mongodb-url" (include "flowkit.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "flowkit.mongoSecretKey" -}}
{{- if .Values.mongodb.existingSecret }}{{ .Values.mongodb.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}

{{/* Pod- and container-level security contexts: include with a uid. */}}
{{- define "flowkit.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ . }}
runAsGroup: {{ . }}
fsGroup: {{ . }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "flowkit.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}
