{{/*
Shared pieces of the templates. Every object is named .Values.name (default trace-summarizer),
as in deploy/kubernetes; the release name goes into the app.kubernetes.io/instance label, which
the selectors include, so two releases in one namespace (with distinct names) stay apart.
*/}}

{{- define "trace-summarizer.name" -}}
{{- required "name must not be empty" .Values.name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object: deploy/kubernetes's, plus Helm's bookkeeping. */}}
{{- define "trace-summarizer.labels" -}}
app.kubernetes.io/name: trace-summarizer
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* What selects the worker pods (Deployment, Service, PDB, PodMonitor): never the Job's. */}}
{{- define "trace-summarizer.workerSelector" -}}
app.kubernetes.io/name: trace-summarizer
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "trace-summarizer.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/*
The environment of a pod that connects: the connection (from the CNPG secrets), TLS, the log
format and the schema. Argument: (dict "ctx" $ "db" <the database values>).
*/}}
{{- define "trace-summarizer.env" -}}
{{- $db := .db -}}
{{- $v := .ctx.Values -}}
{{- if $db.credentialsSecret.name -}}
- name: PGHOST
  value: {{ $db.host | default (printf "%s-rw" (required "database.cluster or database.host must be set" $db.cluster)) | quote }}
- name: PGPORT
  value: {{ $db.port | toString | quote }}
- name: PGDATABASE
  value: {{ required "database.dbname must be set" $db.dbname | quote }}
- name: PGUSER
  valueFrom:
    secretKeyRef:
      name: {{ $db.credentialsSecret.name }}
      key: {{ $db.credentialsSecret.usernameKey }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $db.credentialsSecret.name }}
      key: {{ $db.credentialsSecret.passwordKey }}
{{- else -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ $db.urlSecret.name | default (printf "%s-app" (required "database.cluster or database.urlSecret.name must be set" $db.cluster)) }}
      key: {{ $db.urlSecret.key }}
{{- end }}
- name: PGSSLMODE
  value: {{ $db.sslMode | quote }}
- name: PGSSLROOTCERT
  value: /etc/trace-summarizer/pg-ca/ca.crt
- name: LOG_FORMAT
  value: {{ $v.logFormat | quote }}
{{- with $v.schema }}
- name: TRACE_SUMMARIZER_SCHEMA
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* The pod's security context (non-root, the distroless image's uid). */}}
{{- define "trace-summarizer.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "trace-summarizer.containerSecurityContext" -}}
runAsNonRoot: true
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "trace-summarizer.volumeMounts" -}}
- name: pg-ca
  mountPath: /etc/trace-summarizer/pg-ca
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{/*
Only the CA certificate of the `-ca` secret (it also holds the CA's private key), and a small
scratch /tmp on the read-only root filesystem. Argument: the database values.
*/}}
{{- define "trace-summarizer.volumes" -}}
- name: pg-ca
  secret:
    secretName: {{ .caSecret.name | default (printf "%s-ca" (required "database.cluster or database.caSecret.name must be set" .cluster)) }}
    items:
      - key: {{ .caSecret.key }}
        path: ca.crt
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: 16Mi
{{- end -}}
