{{/*
trireme.driverName is the CSI driver name; it is fixed in the binary
(pkg/csi.DriverName), so it is not a value.
*/}}
{{- define "trireme.driverName" -}}
csi.trireme.dev
{{- end }}

{{/* trireme.fullname prefixes every object the chart creates. */}}
{{- define "trireme.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "trireme.controller.name" -}}
{{ include "trireme.fullname" . }}-controller
{{- end }}

{{- define "trireme.node.name" -}}
{{ include "trireme.fullname" . }}-node
{{- end }}

{{- define "trireme.controller.serviceAccount" -}}
{{ .Values.serviceAccount.controller.name | default (include "trireme.controller.name" .) }}
{{- end }}

{{- define "trireme.node.serviceAccount" -}}
{{ .Values.serviceAccount.node.name | default (include "trireme.node.name" .) }}
{{- end }}

{{/* trireme.labels are on every object. */}}
{{- define "trireme.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{/* trireme.selectorLabels select one component's pods; call with (list $ "component"). */}}
{{- define "trireme.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ $.Chart.Name }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{/* trireme.image is the trireme image reference. */}}
{{- define "trireme.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{/* trireme.sidecarImage renders a sidecar's image and pull policy; call with a sidecars.* value. */}}
{{- define "trireme.sidecarImage" -}}
image: {{ .image.repository }}:{{ .image.tag }}
imagePullPolicy: {{ .image.pullPolicy }}
{{- end }}

{{/* trireme.csiSocket is where every pod's plugin socket is mounted. */}}
{{- define "trireme.csiSocket" -}}
/csi/csi.sock
{{- end }}

{{/* trireme.nodePluginDir is the node plugin's socket directory on the host. */}}
{{- define "trireme.nodePluginDir" -}}
{{ .Values.node.kubeletDir }}/plugins/{{ include "trireme.driverName" . }}
{{- end }}

{{/*
trireme.unprivileged is the securityContext of the controller pod's
containers: they only talk to the API server and over the pod's socket.
*/}}
{{- define "trireme.unprivileged" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end }}

{{/*
trireme.caSecret is the Secret holding the cluster CA.
*/}}
{{- define "trireme.caSecret" -}}
{{- .Values.tls.caSecret | default (printf "%s-ca" (include "trireme.fullname" .)) -}}
{{- end }}

{{/*
trireme.tlsDir is where a trireme container finds its certificates.
*/}}
{{- define "trireme.tlsDir" -}}
/var/run/trireme/tls
{{- end }}

{{/*
trireme.certsInit is an init container that issues one certificate from the
CA Secret into the tls volume. Called with (list $ "name" "--flag=value").
*/}}
{{- define "trireme.certsInit" -}}
{{- $ := index . 0 -}}
- name: {{ index . 1 }}
  image: {{ include "trireme.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  {{- include "trireme.unprivileged" $ | nindent 2 }}
  args:
    - certs
    - --ca-dir=/var/run/trireme/ca
    - --dir={{ include "trireme.tlsDir" $ }}
    - {{ index . 2 }}
    - --ip=$(POD_IP)
    - --validity={{ $.Values.tls.certValidity }}
  env:
    - name: NODE_NAME
      valueFrom:
        fieldRef:
          fieldPath: spec.nodeName
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
  resources:
    {{- toYaml $.Values.tls.resources | nindent 4 }}
  volumeMounts:
    - name: ca
      mountPath: /var/run/trireme/ca
      readOnly: true
    - name: tls
      mountPath: {{ include "trireme.tlsDir" $ }}
{{- end }}

{{/*
trireme.tlsVolumes are the CA Secret, mounted only by the init containers,
and the in-memory directory they issue into.
*/}}
{{- define "trireme.tlsVolumes" -}}
- name: ca
  secret:
    secretName: {{ include "trireme.caSecret" . }}
    defaultMode: 0400
- name: tls
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
