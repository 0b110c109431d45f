{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "toma.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. It contains the release name, so cluster-scoped objects
(ClusterRoles, ClusterRoleBindings) of two releases never collide.
*/}}
{{- define "toma.fullname" -}}
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

{{- define "toma.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "toma.selectorLabels" -}}
app.kubernetes.io/name: {{ include "toma.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "toma.labels" -}}
helm.sh/chart: {{ include "toma.chart" . }}
{{ include "toma.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "toma.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "toma.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace toma watches in namespaced mode. */}}
{{- define "toma.watchNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}

{{- define "toma.leaseName" -}}
{{- default (include "toma.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "toma.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Settings that contradict each other fail the install with a message. */}}
{{- define "toma.validate" -}}
{{- if and .Values.watchNamespace (not .Values.namespaced) }}
{{- fail "watchNamespace is set but namespaced is false: set namespaced=true to watch one namespace" }}
{{- end }}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true, or the replicas would all write" }}
{{- end }}
{{- end }}

{{/* The rules toma needs in the namespaces it watches: what it does with the API, and nothing more. */}}
{{- define "toma.rules" -}}
# Watch TurnCredentials; add and remove the revoke finalizer (a merge patch on the object).
- apiGroups: ["toma.dev"]
  resources: ["turncredentials"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["toma.dev"]
  resources: ["turncredentials/status"]
  verbs: ["patch"]
# Owner references with blockOwnerDeletion on the Secrets it writes.
- apiGroups: ["toma.dev"]
  resources: ["turncredentials/finalizers"]
  verbs: ["update"]
# Read keys, and watch them so that a fixed or changed key takes effect at once.
- apiGroups: ["toma.dev"]
  resources: {{ if .Values.namespaced }}["turnkeys"]{{ else }}["turnkeys", "clusterturnkeys"]{{ end }}
  verbs: ["get", "list", "watch"]
{{- if not .Values.namespaced }}
# ClusterTurnKeys' namespaceSelector: the labels of namespaces, watched for changes.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- end }}
# Read key tokens; write owned Secrets with server-side apply, which needs create to create one.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.rolloutRestart }}
# rolloutRestartTargets: read the checksum a target records, restart it with a pod-template
# annotation as `kubectl rollout restart` does.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
{{- end }}
{{- end }}
