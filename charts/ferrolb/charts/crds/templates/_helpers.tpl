{{/*
The metadata this chart adds to every generated CRD, indented for a top-level metadata block.
The chart's name is spelled out: as the ferrolb chart's dependency it is aliased to "crds".
*/}}
{{- define "ferrolb-crds.metadata" -}}
{{- $labels := dict
    "helm.sh/chart" (printf "ferrolb-crds-%s" .Chart.Version | replace "+" "_")
    "app.kubernetes.io/name" "ferrolb-crds"
    "app.kubernetes.io/instance" .Release.Name
    "app.kubernetes.io/version" .Chart.AppVersion
    "app.kubernetes.io/managed-by" .Release.Service
    "app.kubernetes.io/part-of" "ferrolb" }}
{{- $out := dict "labels" $labels }}
{{- if .Values.keep }}
{{- $_ := set $out "annotations" (dict "helm.sh/resource-policy" "keep") }}
{{- end }}
{{- toYaml $out | nindent 2 | trimPrefix "\n" }}
{{- end }}
