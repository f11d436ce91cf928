{{/* Names, labels and the few values derived from several settings. */}}

{{- define "hookline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hookline.fullname" -}}
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

{{/* Name of one component's objects: <fullname>-<component>, within the 63 character DNS limit. */}}
{{- define "hookline.componentName" -}}
{{- $root := index . 0 }}{{- $component := index . 1 }}
{{- printf "%s-%s" (include "hookline.fullname" $root | trunc (int (sub 62 (len $component)))) $component | trimSuffix "-" }}
{{- end }}

{{- define "hookline.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. app.kubernetes.io/name is always "hookline" (not nameOverride): the sender pods
the operator creates carry app.kubernetes.io/name=hookline, and the PodMonitor and the NATS
NetworkPolicy select on it.
*/}}
{{- define "hookline.labels" -}}
helm.sh/chart: {{ include "hookline.chart" . }}
{{ include "hookline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hookline
{{- end }}

{{- define "hookline.selectorLabels" -}}
app.kubernetes.io/name: hookline
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: call with (list $ "operator"). */}}
{{- define "hookline.componentLabels" -}}
{{ include "hookline.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "hookline.componentSelectorLabels" -}}
{{ include "hookline.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* The hookline image, used by the operator, ingest and (by default) the senders. */}}
{{- define "hookline.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "hookline.senderImage" -}}
{{- default (include "hookline.image" .) .Values.operator.senderImage }}
{{- end }}

{{- define "hookline.natsImage" -}}
{{- if .Values.nats.image.digest }}
{{- printf "%s@%s" .Values.nats.image.repository .Values.nats.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.nats.image.repository .Values.nats.image.tag }}
{{- end }}
{{- end }}

{{/* nats.replicas, refused above 1 for the embedded single-node server (it cannot hold copies). */}}
{{- define "hookline.natsReplicas" -}}
{{- $replicas := .Values.nats.replicas | int }}
{{- if and (gt $replicas 1) (include "hookline.natsEmbedded" .) }}
{{- fail (printf "nats.replicas=%d needs a NATS cluster: set nats.url to one (the embedded server is a single node and takes only nats.replicas=1)" $replicas) }}
{{- end }}
{{- $replicas }}
{{- end }}

{{/* True (non-empty) when the chart runs its own single-node NATS. */}}
{{- define "hookline.natsEmbedded" -}}
{{- if not .Values.nats.url }}true{{ end }}
{{- end }}

{{/*
The NATS URL every hookline process gets: nats.url, or the embedded server's Service by its fully
qualified name (senders run in other namespaces).
*/}}
{{- define "hookline.natsUrl" -}}
{{- if .Values.nats.url }}
{{- .Values.nats.url }}
{{- else }}
{{- printf "nats://%s.%s.svc.%s:4222" (include "hookline.componentName" (list . "nats")) .Release.Namespace .Values.clusterDomain }}
{{- end }}
{{- end }}

{{- define "hookline.operatorServiceAccount" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "hookline.componentName" (list . "operator")) .Values.operator.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hookline.ingestServiceAccount" -}}
{{- if .Values.ingest.serviceAccount.create }}
{{- default (include "hookline.componentName" (list . "ingest")) .Values.ingest.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.ingest.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret holding the ingest bearer token, and its key. */}}
{{- define "hookline.ingestTokenSecret" -}}
{{- default (include "hookline.componentName" (list . "ingest-token")) .Values.ingest.auth.existingSecret }}
{{- end }}

{{/*
Prometheus Operator objects: rendered when monitoring.enabled and the item are on. With
monitoring.checkAPI only when the cluster serves monitoring.coreos.com/v1 too (helm template:
--api-versions monitoring.coreos.com/v1). Call with (list $ .Values.monitoring.xxx).
*/}}
{{- define "hookline.monitoringOn" -}}
{{- $root := index . 0 }}{{- $item := index . 1 }}
{{- $served := or (not $root.Values.monitoring.checkAPI) ($root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}
{{- if and $root.Values.monitoring.enabled $item.enabled $served }}true{{ end }}
{{- end }}

{{/*
Replicas of one sender pool (call with (list $ pool)): its own replicas when given, else 2 when pools
are the default mode (operator.defaultSenderMode=Pool) and 0 when they are not, so an installation
that uses only dedicated senders runs no idle pool pods.
*/}}
{{- define "hookline.poolReplicas" -}}
{{- $root := index . 0 }}{{- $pool := index . 1 }}
{{- if hasKey $pool "replicas" }}{{ $pool.replicas }}{{ else }}{{ ternary 2 0 (eq $root.Values.operator.defaultSenderMode "Pool") }}{{ end }}
{{- end }}

{{/*
What the operator adds to every dedicated sender pod (sender.* values), as JSON for
HOOKLINE_SENDER_POD_TEMPLATE (operator/rules/senderpod.py); the pull policy defaults to image.pullPolicy.
*/}}
{{- define "hookline.senderPodTemplate" -}}
{{- $sender := .Values.sender }}
{{- $template := dict "imagePullPolicy" (default .Values.image.pullPolicy $sender.imagePullPolicy) }}
{{- range $key := list "imagePullSecrets" "nodeSelector" "tolerations" "affinity" "priorityClassName" "podLabels" "podAnnotations" "resources" }}
{{- with index $sender $key }}
{{- $_ := set $template $key . }}
{{- end }}
{{- end }}
{{- toJson $template }}
{{- end }}

{{/* Hardened security contexts shared by every pod and container. */}}
{{- define "hookline.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "hookline.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Scheduling and pod-level settings common to every workload: call with one component's values. */}}
{{- define "hookline.podScheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Outbound safety settings of the operator (it hands the same to the senders it creates). Set only when
they allow something: an unset variable means the safe default (public https only).
*/}}
{{- define "hookline.egressEnv" -}}
{{- with .Values.egress.allowNetworks }}
- name: HOOKLINE_ALLOW_NETWORKS
  value: {{ join "," . | quote }}
{{- end }}
{{- if .Values.egress.allowHttp }}
- name: HOOKLINE_ALLOW_HTTP
  value: "1"
{{- end }}
{{- end }}
