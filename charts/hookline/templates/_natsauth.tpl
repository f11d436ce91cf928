{{/*
NATS authentication (nats.auth) and TLS (nats.tls): who each hookline process is on the bus, and how it
checks the server. Decentralized JWT auth: the hookline operator makes the install's keys, the component
users' credentials and the server's accounts (auth.conf) into the Secret below at its start (Helm
cannot make nkeys); the NATS, ingest and pool pods mount it and wait until it exists. Each process gets
only its own `.creds` file (a Secret item), by path: never a credential in a ConfigMap or an env value.
*/}}

{{- define "hookline.natsAuth" -}}
{{- if .Values.nats.auth.enabled }}true{{ end }}
{{- end }}

{{/* The Secret with the accounts' keys, the components' .creds and auth.conf. */}}
{{- define "hookline.natsAuthSecret" -}}
{{- if .Values.nats.auth.existingSecret }}
{{- .Values.nats.auth.existingSecret }}
{{- else if .Values.nats.url }}
{{- fail "nats.auth.enabled with nats.url (an external NATS) needs nats.auth.existingSecret: a Secret with operator.creds, ingest.creds, layout.creds and pool.creds (and, for each sender's own user, the seeds of `hookline nats-auth`: docs/install.md), or nats.auth.enabled=false" }}
{{- else }}
{{- include "hookline.componentName" (list . "nats-auth") }}
{{- end }}
{{- end }}

{{- define "hookline.natsTls" -}}
{{- if .Values.nats.tls.enabled }}true{{ end }}
{{- end }}

{{/* The server certificate's Secret (tls.crt, tls.key, ca.crt): cert-manager's or an existing one. */}}
{{- define "hookline.natsTlsSecret" -}}
{{- if .Values.nats.tls.existingSecret }}
{{- .Values.nats.tls.existingSecret }}
{{- else if .Values.nats.tls.certManager }}
{{- include "hookline.componentName" (list . "nats") }}-tls
{{- else if not .Values.nats.url }}
{{- fail "nats.tls.enabled needs nats.tls.certManager=true (cert-manager makes the certificate) or nats.tls.existingSecret (a kubernetes.io/tls Secret with ca.crt)" }}
{{- end }}
{{- end }}

{{- define "hookline.natsCredsDir" -}}/var/run/secrets/hookline/nats{{- end }}
{{- define "hookline.natsCaFile" -}}/var/run/secrets/hookline/nats-ca/ca.crt{{- end }}

{{/* Args of a NATS client: (list $ ROLE), ROLE ingest, layout or pool: its .creds file and the CA. */}}
{{- define "hookline.natsClientArgs" -}}
{{- $ := index . 0 }}
{{- if include "hookline.natsAuth" $ }}
- --nats-creds
- {{ printf "%s/%s.creds" (include "hookline.natsCredsDir" $) (index . 1) | quote }}
{{- end }}
{{- if include "hookline.natsTls" $ }}
- --nats-ca
- {{ include "hookline.natsCaFile" $ | quote }}
{{- end }}
{{- end }}

{{- define "hookline.natsClientMounts" -}}
{{- if include "hookline.natsAuth" . }}
- name: nats-creds
  mountPath: {{ include "hookline.natsCredsDir" . }}
  readOnly: true
{{- end }}
{{- if include "hookline.natsTls" . }}
- name: nats-ca
  mountPath: {{ dir (include "hookline.natsCaFile" .) }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Volumes: (list $ ROLE...): only those roles' .creds items of the auth Secret, and the CA. */}}
{{- define "hookline.natsClientVolumes" -}}
{{- $ := index . 0 }}
{{- if include "hookline.natsAuth" $ }}
- name: nats-creds
  secret:
    secretName: {{ include "hookline.natsAuthSecret" $ }}
    defaultMode: 0440
    items:
      {{- range (rest .) }}
      - key: {{ . }}.creds
        path: {{ . }}.creds
      {{- end }}
{{- end }}
{{- include "hookline.natsCaVolume" $ }}
{{- end }}

{{/* The CA that signed the NATS server's certificate: the TLS Secret's ca.crt (embedded), or the
nats.tls.ca value in a ConfigMap (an external NATS; a CA is no secret). */}}
{{- define "hookline.natsCaVolume" -}}
{{- if include "hookline.natsTls" . }}
- name: nats-ca
  {{- if .Values.nats.url }}
  configMap:
    name: {{ include "hookline.componentName" (list . "nats-ca") }}
  {{- else }}
  secret:
    secretName: {{ include "hookline.natsTlsSecret" . }}
    items:
      - key: ca.crt
        path: ca.crt
  {{- end }}
{{- end }}
{{- end }}

{{/* The operator's env: where its NATS user comes from (it makes the Secret) and the CA. */}}
{{- define "hookline.natsOperatorEnv" -}}
{{- if include "hookline.natsAuth" . }}
{{- if .Values.nats.auth.existingSecret }}
- name: HOOKLINE_NATS_KEYS_DIR
  value: {{ include "hookline.natsCredsDir" . | quote }}
{{- else }}
- name: HOOKLINE_NATS_AUTH_SECRET
  value: {{ include "hookline.natsAuthSecret" . | quote }}
- name: HOOKLINE_NATS_AUTH_NAMESPACE
  value: {{ .Release.Namespace | quote }}
{{- end }}
{{- end }}
{{- if include "hookline.natsTls" . }}
- name: HOOKLINE_NATS_CA
  value: {{ include "hookline.natsCaFile" . | quote }}
{{- end }}
{{- end }}

{{/* The operator mounts the whole existing Secret (seeds included: it mints senders' users). */}}
{{- define "hookline.natsOperatorMounts" -}}
{{- if and (include "hookline.natsAuth" .) .Values.nats.auth.existingSecret }}
- name: nats-creds
  mountPath: {{ include "hookline.natsCredsDir" . }}
  readOnly: true
{{- end }}
{{- if include "hookline.natsTls" . }}
- name: nats-ca
  mountPath: {{ dir (include "hookline.natsCaFile" .) }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "hookline.natsOperatorVolumes" -}}
{{- if and (include "hookline.natsAuth" .) .Values.nats.auth.existingSecret }}
- name: nats-creds
  secret:
    secretName: {{ .Values.nats.auth.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- include "hookline.natsCaVolume" . }}
{{- end }}

{{/* With auth, ingest's own user may only publish events: the streams and buckets are made first by an
init container with the layout user (`hookline ingest --layout-only`, the same stream settings). */}}
{{- define "hookline.ingestLayoutInit" -}}
{{- if include "hookline.natsAuth" . }}
initContainers:
  - name: layout
    image: {{ include "hookline.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args:
      - ingest
      - --layout-only
      - --nats-url
      - {{ include "hookline.natsUrl" . | quote }}
      {{- include "hookline.natsClientArgs" (list . "layout") | nindent 6 }}
      - --stream-max-bytes
      - {{ .Values.nats.streamMaxBytes | int64 | quote }}
      - --stream-retention
      - {{ .Values.nats.streamRetention | quote }}
      - --recovery-window
      - {{ .Values.nats.recoveryWindow | quote }}
      - --recovery-max-bytes
      - {{ .Values.nats.recoveryMaxBytes | int64 | quote }}
      - --stream-max-consumers
      - {{ .Values.nats.streamMaxConsumers | int64 | quote }}
      - --nats-replicas
      - {{ include "hookline.natsReplicas" . | quote }}
      {{- if not .Values.ingest.auth.enabled }}
      - --insecure-no-auth
      {{- end }}
    securityContext:
      {{- include "hookline.containerSecurityContext" . | nindent 6 }}
    resources:
      {{- toYaml .Values.ingest.resources | nindent 6 }}
    volumeMounts:
      - name: tmp
        mountPath: /tmp
      # Its own volume: the ingest container never sees the layout user's credentials.
      - name: nats-layout-creds
        mountPath: {{ include "hookline.natsCredsDir" . }}
        readOnly: true
      {{- if include "hookline.natsTls" . }}
      - name: nats-ca
        mountPath: {{ dir (include "hookline.natsCaFile" .) }}
        readOnly: true
      {{- end }}
{{- end }}
{{- end }}

{{- define "hookline.natsLayoutVolume" -}}
{{- if include "hookline.natsAuth" . }}
- name: nats-layout-creds
  secret:
    secretName: {{ include "hookline.natsAuthSecret" . }}
    defaultMode: 0440
    items:
      - key: layout.creds
        path: layout.creds
{{- end }}
{{- end }}
