{{/*
Names, labels and small helpers shared by every template. Nothing here renders an object.
*/}}

{{- define "ferrolb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name. Object names add "-controller" / "-speaker", so it is kept at 52
characters to leave room for them within the 63-character label-value limit.
*/}}
{{- define "ferrolb.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ferrolb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "ferrolb.labels" -}}
helm.sh/chart: {{ include "ferrolb.chart" . }}
app.kubernetes.io/name: {{ include "ferrolb.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferrolb
{{- end }}

{{/* Selector labels of one component; call with (dict "ctx" $ "component" "controller"). */}}
{{- define "ferrolb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrolb.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* All labels of one component's objects; same argument as ferrolb.selectorLabels. */}}
{{- define "ferrolb.componentLabels" -}}
{{ include "ferrolb.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* repository:tag, or repository@sha256:... when the tag is a digest. */}}
{{- define "ferrolb.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag | trimPrefix "@" }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" .Values.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "ferrolb.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (printf "%s-controller" (include "ferrolb.fullname" .)) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ferrolb.speaker.serviceAccountName" -}}
{{- if .Values.speaker.serviceAccount.create }}
{{- default (printf "%s-speaker" (include "ferrolb.fullname" .)) .Values.speaker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.speaker.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "ferrolb.leaseName" -}}
{{- default (printf "%s-controller" (include "ferrolb.fullname" .)) .Values.controller.leaseName }}
{{- end }}

{{/*
A duration such as "25ms" or "2s" in milliseconds. values.schema.json has already restricted the
form to digits followed by ms or s, so anything else cannot reach here.
*/}}
{{- define "ferrolb.durationMs" -}}
{{- if hasSuffix "ms" . }}
{{- trimSuffix "ms" . | int64 }}
{{- else }}
{{- mul (trimSuffix "s" . | int64) 1000 }}
{{- end }}
{{- end }}

{{/*
Checks that span several values, which values.schema.json cannot express. Included by the
controller Deployment, which every install renders, so a bad combination stops the release.
*/}}
{{- define "ferrolb.validate" -}}
{{- $hb := include "ferrolb.durationMs" .Values.speaker.heartbeatInterval | int64 }}
{{- $dead := include "ferrolb.durationMs" .Values.speaker.deadAfter | int64 }}
{{- range $name, $ms := dict "speaker.heartbeatInterval" $hb "speaker.deadAfter" $dead }}
{{- if gt $ms 3600000 }}
{{- fail (printf "%s is longer than an hour (3600s), which the speaker refuses" $name) }}
{{- end }}
{{- end }}
{{- $bind := .Values.metrics.bindAddress }}
{{- if or (hasPrefix "127." $bind) (eq $bind "::1") }}
{{- fail (printf "metrics.bindAddress=%s is a loopback address: the kubelet probes /healthz and /readyz on the pod's IP, so every pod would be restarted. Use 0.0.0.0 or ::" $bind) }}
{{- end }}
{{- if lt $dead (mul $hb 2) }}
{{- fail (printf "speaker.deadAfter (%s) must be at least twice speaker.heartbeatInterval (%s): a peer is declared dead only after missing two heartbeats, as the speaker itself requires" .Values.speaker.deadAfter .Values.speaker.heartbeatInterval) }}
{{- end }}
{{- $nodePool := .Values.addressPool.nodeAddresses.enabled }}
{{- if and .Values.addressPool.create (not $nodePool) (empty .Values.addressPool.addresses) }}
{{- fail "addressPool.create=true needs at least one entry in addressPool.addresses (a CIDR like 198.51.100.0/24 or a range like 198.51.100.10-198.51.100.20), or addressPool.nodeAddresses.enabled=true for forwarder mode" }}
{{- end }}
{{- if and $nodePool (not (empty .Values.addressPool.addresses)) }}
{{- fail "addressPool.nodeAddresses.enabled=true publishes the nodes' own addresses: leave addressPool.addresses empty" }}
{{- end }}
{{- end }}

{{/* The arguments both binaries share, as a list. */}}
{{- define "ferrolb.commonArgs" -}}
{{- $args := list (printf "--lb-class=%s" .Values.lbClass) (printf "--log-level=%s" .Values.logLevel) (printf "--log-format=%s" .Values.logFormat) }}
{{- if .Values.ignoreClassless }}
{{- $args = append $args "--ignore-classless" }}
{{- end }}
{{- toJson $args }}
{{- end }}

{{/*
The container's args: the chart's flags, then extraArgs. clap rejects a flag given twice, so a
chart flag that extraArgs also sets (as --flag or --flag=value) is left out: extraArgs override.
Call with (dict "args" <chart flags> "extra" <extraArgs>).
*/}}
{{- define "ferrolb.args" -}}
{{- $overridden := list }}
{{- range .extra }}
{{- $overridden = append $overridden (regexReplaceAll "=.*$" . "") }}
{{- end }}
{{- $out := list }}
{{- range .args }}
{{- if not (has (regexReplaceAll "=.*$" . "") $overridden) }}
{{- $out = append $out . }}
{{- end }}
{{- end }}
{{- toYaml (concat $out .extra) }}
{{- end }}

{{/* host:port for --metrics-addr; IPv6 literals get brackets. Call with (list $ port). */}}
{{- define "ferrolb.metricsAddr" -}}
{{- $ctx := index . 0 }}
{{- $port := index . 1 }}
{{- $host := $ctx.Values.metrics.bindAddress }}
{{- if contains ":" $host }}
{{- printf "[%s]:%d" $host (int $port) }}
{{- else }}
{{- printf "%s:%d" $host (int $port) }}
{{- end }}
{{- end }}

{{- define "ferrolb.l2AdvertisementName" -}}
{{- default .Values.addressPool.name .Values.addressPool.l2Advertisement.name }}
{{- end }}

{{/*
How the objects of addressPool are rendered: "hook", "takeover" or "release"; see
templates/addresspool.yaml. Takeover is recognised from the cluster: the pool carries the
marker of the install hook, and the controller Deployment does not yet carry the annotation
that says the pool is a release object (the Deployment, a built-in kind, is always written).
lookup returns nothing under `helm template` and `helm lint`, which therefore never see it.
*/}}
{{- define "ferrolb.addressPool.mode" -}}
{{- if not (.Capabilities.APIVersions.Has "ferrolb.io/v1beta1/IPAddressPool") }}
{{- "hook" }}
{{- else }}
{{- $live := lookup "ferrolb.io/v1beta1" "IPAddressPool" "" .Values.addressPool.name | default dict }}
{{- $hooked := eq (dig "metadata" "annotations" "ferrolb.io/created-by" "" $live) "helm-install-hook" }}
{{- $deploy := lookup "apps/v1" "Deployment" .Release.Namespace (printf "%s-controller" (include "ferrolb.fullname" .)) | default dict }}
{{- $inRelease := eq (dig "metadata" "annotations" "ferrolb.io/address-pool-in-release" "" $deploy) "true" }}
{{- if and $hooked (not $inRelease) }}
{{- "takeover" }}
{{- else }}
{{- "release" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Annotations of the install-hook form; call with (dict "ctx" $ "weight" "0"). */}}
{{- define "ferrolb.addressPool.hookAnnotations" -}}
helm.sh/hook: post-install
helm.sh/hook-weight: {{ .weight | quote }}
# Not the default before-hook-creation: an existing pool is never deleted to be recreated.
helm.sh/hook-delete-policy: hook-failed
# Ownership metadata, so that the next upgrade adopts the object instead of failing on it.
meta.helm.sh/release-name: {{ .ctx.Release.Name }}
meta.helm.sh/release-namespace: {{ .ctx.Release.Namespace }}
ferrolb.io/created-by: helm-install-hook
{{- end }}

{{/*
The GLIBC_TUNABLES entry of a container's env, unless its extraEnv (the argument) sets the
variable itself: an env list with a name twice is rejected by server-side apply.

glibc gives threads that contend for malloc arenas of their own (up to 8 per core), each keeping
its own freed memory; two serve these few threads. Measured on the controller (2 cores, static
binary, restart with 5,000 Services), VmRSS without -> with: 27.2 -> 25.3 and 27.3 -> 25.6 MiB.
The speaker gets the same setting; it was not measured there.
*/}}
{{- define "ferrolb.mallocEnv" -}}
{{- $own := true }}
{{- range . }}
{{- if eq (toString .name) "GLIBC_TUNABLES" }}
{{- $own = false }}
{{- end }}
{{- end }}
{{- if $own }}
- name: GLIBC_TUNABLES
  value: glibc.malloc.arena_max=2
{{- end }}
{{- end }}
