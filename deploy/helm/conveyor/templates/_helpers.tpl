{{/*
Names, labels and the parts every pod shares. A component's helpers take
(dict "root" $ "component" NAME).
*/}}

{{- define "conveyor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "conveyor.fullname" -}}
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

{{/* A component's object name: FULLNAME-SUFFIX, at most `max` (default 63) characters. */}}
{{- define "conveyor.componentName" -}}
{{- $max := int (default 63 .max) -}}
{{- printf "%s-%s" (include "conveyor.fullname" .root) .suffix | trunc $max | trimSuffix "-" -}}
{{- end -}}

{{- define "conveyor.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride -}}
{{- end -}}

{{- define "conveyor.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conveyor.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .consumer }}
conveyor.dev/consumer: {{ . }}
{{- end }}
{{- end -}}

{{- define "conveyor.labels" -}}
helm.sh/chart: {{ include "conveyor.chart" .root }}
{{ include "conveyor.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: conveyor
{{- with .root.Values.environment }}
conveyor.dev/environment: {{ . }}
{{- end }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* metadata: name, namespace, labels (and annotations when given). */}}
{{- define "conveyor.metadata" -}}
name: {{ .name }}
namespace: {{ include "conveyor.namespace" .root }}
labels:
  {{- include "conveyor.labels" . | nindent 2 }}
{{- with .annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "conveyor.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- $tag := default .Chart.AppVersion $image.tag -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: 'latest' names no one build: give a version, a commit or a digest" -}}
{{- end -}}
{{- printf "%s:%s" $image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "conveyor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.specConfigMap" -}}
{{- include "conveyor.componentName" (dict "root" . "suffix" "spec") -}}
{{- end -}}

{{/* Pod template annotations: a changed spec or secret list rolls the pods. */}}
{{- define "conveyor.podAnnotations" -}}
checksum/spec: {{ .Values.spec.content | sha256sum }}
checksum/env: {{ toJson (list .Values.env .Values.secrets) | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The pod-level fields every pod shares; `serviceAccount` overrides the account. */}}
{{- define "conveyor.podCommon" -}}
{{- $root := .root -}}
serviceAccountName: {{ default (include "conveyor.serviceAccountName" $root) .serviceAccount }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  runAsNonRoot: true
  runAsUser: {{ int $root.Values.securityContext.runAsUser }}
  runAsGroup: {{ int $root.Values.securityContext.runAsGroup }}
  fsGroup: {{ int $root.Values.securityContext.fsGroup }}
  seccompProfile:
    type: RuntimeDefault
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: spec
    configMap:
      name: {{ default (include "conveyor.specConfigMap" $root) .configMap }}
      items:
        - key: conveyor.yaml
          path: conveyor.yaml
  - name: state
    emptyDir:
      sizeLimit: {{ $root.Values.stateVolume.sizeLimit }}
  - name: tmp
    emptyDir:
      sizeLimit: {{ $root.Values.tmpVolume.sizeLimit }}
{{- end -}}

{{/* The container-level fields every container shares (after name and image). */}}
{{- define "conveyor.containerCommon" -}}
{{- $root := .root -}}
imagePullPolicy: {{ $root.Values.image.pullPolicy }}
workingDir: /app
securityContext:
  runAsNonRoot: true
  runAsUser: {{ int $root.Values.securityContext.runAsUser }}
  runAsGroup: {{ int $root.Values.securityContext.runAsGroup }}
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  privileged: false
  capabilities:
    drop: [ALL]
  seccompProfile:
    type: RuntimeDefault
env:
  - name: CONVEYOR_PROJECT_DIR
    value: /app
  - name: HOME
    value: /tmp
  - name: PYTHONUNBUFFERED
    value: "1"
  {{- with $root.Values.environment }}
  - name: CONVEYOR_ENV
    value: {{ . | quote }}
  {{- end }}
  {{- range .extraEnv }}
  - name: {{ .name }}
    value: {{ .value | quote }}
  {{- end }}
  {{- range $root.Values.env }}
  - name: {{ .name }}
    value: {{ .value | quote }}
  {{- end }}
  {{- range $root.Values.secrets.env }}
  {{- $secret := default $root.Values.secrets.existingSecret .secret }}
  {{- if not $secret }}
  {{- fail (printf "secrets.env %s: no Secret to read it from: set secrets.existingSecret or its secret" .name) }}
  {{- end }}
  - name: {{ .name }}
    valueFrom:
      secretKeyRef:
        name: {{ $secret }}
        key: {{ default .name .key }}
        optional: {{ default false .optional }}
  {{- end }}
volumeMounts:
  - name: spec
    mountPath: /app/conveyor.yaml
    subPath: conveyor.yaml
    readOnly: true
  - name: state
    mountPath: /app/.conveyor
  - name: tmp
    mountPath: /tmp
resources:
  {{- toYaml .resources | nindent 2 }}
{{- end -}}

{{/*
Probes of a long-running process without an HTTP port (stream consumers, the rollout
controller): the main process (PID 1) is neither a zombie nor stopped, and the spec is
readable. They catch a wedged container, not a slow loop: the commands log each tick.
*/}}
{{- define "conveyor.processProbes" -}}
{{- $check := "import sys; state = open('/proc/1/stat').read().rsplit(')', 1)[1].split()[0]; open('/app/conveyor.yaml').close(); sys.exit(state in ('Z', 'T', 't', 'X'))" -}}
livenessProbe:
  exec:
    command: [python, -c, {{ $check | quote }}]
  initialDelaySeconds: 10
  periodSeconds: 30
  timeoutSeconds: 10
  failureThreshold: 3
readinessProbe:
  exec:
    command: [python, -c, {{ $check | quote }}]
  periodSeconds: 30
  timeoutSeconds: 10
  failureThreshold: 3
{{- end -}}

{{/* An autoscaling/v2 HorizontalPodAutoscaler: (dict "root" $ "name" N "component" C "target" DEPLOYMENT "cfg" AUTOSCALING). */}}
{{- define "conveyor.hpa" -}}
{{- $cfg := .cfg -}}
{{- if lt (int $cfg.maxReplicas) (int $cfg.minReplicas) -}}
{{- fail (printf "%s: maxReplicas %v is below minReplicas %v" .path $cfg.maxReplicas $cfg.minReplicas) -}}
{{- end -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  {{- include "conveyor.metadata" (dict "root" .root "component" .component "name" .name) | nindent 2 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ .target }}
  minReplicas: {{ int $cfg.minReplicas }}
  maxReplicas: {{ int $cfg.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ int $cfg.targetCPUUtilizationPercentage }}
    {{- if $cfg.queueDepth.enabled }}
    {{- if eq $cfg.queueDepth.type "External" }}
    - type: External
      external:
        metric:
          name: {{ $cfg.queueDepth.metric }}
          {{- with $cfg.queueDepth.selector }}
          selector:
            matchLabels:
              {{- toYaml . | nindent 14 }}
          {{- end }}
        target:
          type: AverageValue
          averageValue: {{ $cfg.queueDepth.averageValue | quote }}
    {{- else }}
    - type: Pods
      pods:
        metric:
          name: {{ $cfg.queueDepth.metric }}
          {{- with $cfg.queueDepth.selector }}
          selector:
            matchLabels:
              {{- toYaml . | nindent 14 }}
          {{- end }}
        target:
          type: AverageValue
          averageValue: {{ $cfg.queueDepth.averageValue | quote }}
    {{- end }}
    {{- end }}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: {{ int $cfg.scaleDownStabilizationSeconds }}
{{- end -}}

{{/* A policy/v1 PodDisruptionBudget: (dict "root" $ "name" N "component" C "consumer" X). */}}
{{- define "conveyor.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  {{- include "conveyor.metadata" (dict "root" .root "component" .component "consumer" .consumer "name" .name) | nindent 2 }}
spec:
  maxUnavailable: {{ .root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "conveyor.selectorLabels" (dict "root" .root "component" .component "consumer" .consumer) | nindent 6 }}
{{- end -}}

{{/* NetworkPolicy egress rules: anywhere, or DNS and networkPolicy.egress.rules. */}}
{{- define "conveyor.egress" -}}
{{- $np := .Values.networkPolicy -}}
{{- if not $np.egress.restrict }}
- {}
{{- else }}
# DNS
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- with $np.egress.rules }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- end -}}
