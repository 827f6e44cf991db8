{{- define "darter.labels" -}}
app.kubernetes.io/name: darter
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "darter.operatorName" -}}{{ .Release.Name }}-operator{{- end -}}
{{- define "darter.agentName" -}}{{ .Release.Name }}-agent{{- end -}}

{{- define "darter.image" -}}
{{ .root.Values.image.registry }}/{{ .name }}:{{ .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- end -}}
