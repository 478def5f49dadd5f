{{/* Names and labels shared by every object of the chart. */}}

{{- define "qrux.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "qrux.injector" -}}
{{- printf "%s-injector" (include "qrux.fullname" .) -}}
{{- end -}}

{{- define "qrux.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "qrux.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: qrux
{{- end -}}

{{- define "qrux.injectorSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: injector
{{- end -}}

{{/* The restricted security context of the sidecar and the injector. */}}
{{- define "qrux.securityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Namespaces that get the sidecar ConfigMap (and the demo's TLS Secret). */}}
{{- define "qrux.configNamespaces" -}}
{{- $ns := .Values.sidecar.namespaces -}}
{{- if .Values.demo.enabled -}}{{- $ns = append $ns .Values.demo.namespace -}}{{- end -}}
{{- $ns | uniq | toJson -}}
{{- end -}}

{{/* qrux.yaml: the sidecar's configuration (README "Configuration"). */}}
{{- define "qrux.config" -}}
{{- $s := .Values.config.server -}}
server:
  listen: "[::]:{{ .Values.sidecar.port }}"
  https_listen: "[::]:{{ .Values.sidecar.port }}"
  cert: /etc/qrux-tls/tls.crt
  key: /etc/qrux-tls/tls.key
  drain_delay_secs: {{ $s.drainDelaySecs }}
  early_data: {{ $s.earlyData }}
  retry: {{ $s.retry }}
  {{- if hasKey $s "workers" }}
  workers: {{ $s.workers }}
  {{- end }}
  {{- if hasKey $s "altSvcMaxAge" }}
  alt_svc_max_age: {{ $s.altSvcMaxAge }}
  {{- end }}
  limits:
    graceful_shutdown_secs: {{ $s.gracefulShutdownSecs }}
routes:
{{- range .Values.config.routes }}
  - match: {{ .match | quote }}
    {{- if .upstream }}
    upstream: {{ .upstream | quote }}
    {{- else }}
    upstreams: {{ .upstreams | toJson }}
    {{- end }}
{{- end }}
admin:
  # Off loopback (the kubelet probes the pod's IP): the API needs the token;
  # the probes do not.
  listen: "0.0.0.0:{{ .Values.sidecar.adminPort }}"
  token_file: /etc/qrux-tls/admin-token
# The XDP filter's maps, in every namespace's config: a pod gets the filter
# from sidecar.xdp or its qrux.io/xdp annotation, and the injector mounts
# the pod's own bpffs directory there. Without the filter qrux runs
# normally (qrux_xdp_attached 0).
xdp:
  pin: /sys/fs/bpf
{{- end -}}
