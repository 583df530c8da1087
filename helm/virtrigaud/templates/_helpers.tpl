{{/* At most 54 characters, so that "<fullname>-metrics" is still a valid Service name. */}}
{{- define "virtrigaud.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}

{{- define "virtrigaud.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector of the controller pods; the bundled Redis has its own component. */}}
{{- define "virtrigaud.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{/* Selector of the RayCluster's worker pods (kuberay mode), where the shards run. */}}
{{- define "virtrigaud.rayWorkerSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: ray-worker
{{- end -}}

{{- define "virtrigaud.redisSelector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* repository:tag, or repository@digest when image.digest is set (the tag is then
ignored); global.imageRegistry, when set, prefixes the repository. */}}
{{- define "virtrigaud.image" -}}
{{- $repository := .Values.image.repository -}}
{{- with .Values.global.imageRegistry }}{{ $repository = printf "%s/%s" (trimSuffix "/" .) $repository }}{{ end -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" $repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* imagePullSecrets of every pod running the project image: global's, then the chart's. */}}
{{- define "virtrigaud.imagePullSecrets" -}}
{{- $secrets := concat .Values.global.imagePullSecrets .Values.imagePullSecrets -}}
{{- with $secrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ if kindIs "string" . }}{{ . | quote }}{{ else }}{{ .name | quote }}{{ end }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The writable places of a pod with a read-only root filesystem: /tmp (Ray's session
files, temporary kubeconfigs) and the image user's home (ssh's known_hosts for libvirt
over SSH). */}}
{{- define "virtrigaud.writableMounts" -}}
- {name: tmp, mountPath: /tmp}
- {name: home, mountPath: /home/virtrigaud}
{{- end -}}
{{- define "virtrigaud.writableVolumes" -}}
- {name: tmp, emptyDir: {sizeLimit: {{ .Values.tmpSizeLimit | quote }}}}
- {name: home, emptyDir: {sizeLimit: 16Mi}}
{{- end -}}

{{/* True (non-empty) when the chart deploys its own Redis. */}}
{{- define "virtrigaud.bundledRedis" -}}
{{- if and (not .Values.redis.url) (not .Values.redis.urlSecret.name) .Values.redis.bundled.enabled -}}
true
{{- end -}}
{{- end -}}

{{/*
The metrics check used by the probes. The process serves /metrics (prometheus_client)
on 127.0.0.1 only, so the kubelet cannot reach it over the pod IP: probe from inside
the container instead.
*/}}
{{- define "virtrigaud.metricsProbe" -}}
exec:
  command:
    - python
    - -c
    - {{ printf "import urllib.request; urllib.request.urlopen('http://127.0.0.1:%d/metrics', timeout=5).read()" (int .Values.metrics.port) | quote }}
{{- end -}}

{{/* The --redis-url argument; empty when the URL comes from a Secret or no Redis is set. */}}
{{- define "virtrigaud.redisURL" -}}
{{- if .Values.redis.urlSecret.name -}}
{{- else if .Values.redis.url -}}
{{ .Values.redis.url }}
{{- end -}}
{{- end -}}

{{/* The Secret holding the bundled Redis's password and URL. */}}
{{- define "virtrigaud.redisSecretName" -}}
{{ include "virtrigaud.fullname" . }}-redis
{{- end -}}

{{/* The KubeRay RayCluster's name: KubeRay names its head Service "<name>-head-svc",
which must stay a 63-character DNS label. */}}
{{- define "virtrigaud.rayClusterName" -}}
{{- printf "%s-ray" (include "virtrigaud.fullname" . | trunc 47 | trimSuffix "-") -}}
{{- end -}}

{{/* The --ray-address of the controller: empty in embedded mode. */}}
{{- define "virtrigaud.rayAddress" -}}
{{- if eq .Values.ray.mode "external" -}}
{{ .Values.ray.address }}
{{- else if eq .Values.ray.mode "kuberay" -}}
{{ include "virtrigaud.rayClusterName" . }}-head-svc.{{ .Release.Namespace }}.svc:6379
{{- end -}}
{{- end -}}

{{/* True (non-empty) when the controller joins the cluster as a Ray node of its own
(every mode but embedded and Ray Client). */}}
{{- define "virtrigaud.rayJoinsAsNode" -}}
{{- $address := include "virtrigaud.rayAddress" . -}}
{{- if and $address (not (hasPrefix "ray://" $address)) -}}
true
{{- end -}}
{{- end -}}

{{/* host:port of the Redis that keeps the KubeRay head's GCS state (fault tolerance):
the bundled Redis, or the host of redis.url. Empty when the URL comes from a Secret. */}}
{{- define "virtrigaud.gcsRedisAddress" -}}
{{- if .Values.redis.urlSecret.name -}}
{{- else if .Values.redis.url -}}
{{ regexReplaceAll "^[a-z]+://([^@/]*@)?([^/]+).*$" .Values.redis.url "${2}" }}
{{- else if include "virtrigaud.bundledRedis" . -}}
{{ include "virtrigaud.fullname" . }}-redis:6379
{{- end -}}
{{- end -}}

{{/* Shard worker pods: enough for every shard, plus the spares. */}}
{{- define "virtrigaud.rayWorkers" -}}
{{- $perWorker := int .Values.ray.shardsPerWorker -}}
{{- add (div (add (int .Values.shards) (sub $perWorker 1)) $perWorker) (int .Values.ray.spareWorkers) -}}
{{- end -}}

{{/* Environment every Ray process of the chart shares. */}}
{{- define "virtrigaud.rayEnv" -}}
- {name: RAY_USAGE_STATS_ENABLED, value: "0"}
- {name: RAY_AUTH_MODE, value: disabled}
{{- end -}}

{{/* The ServiceAccount the controller and Ray pods run as: serviceAccount.name, else the
full name when the chart creates it, else the namespace's default. */}}
{{- define "virtrigaud.serviceAccountName" -}}
{{- if .Values.serviceAccount.name -}}
{{ .Values.serviceAccount.name }}
{{- else if .Values.serviceAccount.create -}}
{{ include "virtrigaud.fullname" . }}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{/* The leader Lease of `virtrigaud run --instance <fullname>` (virtrigaud/instance.py). */}}
{{- define "virtrigaud.leaseName" -}}
{{ include "virtrigaud.fullname" . }}-leader
{{- end -}}

{{/* The shard-count ConfigMap of the same instance. */}}
{{- define "virtrigaud.configMapName" -}}
{{ include "virtrigaud.fullname" . }}-config
{{- end -}}

{{/* Namespaces whose Secrets the controller may read, as a JSON list: rbac.secretNamespaces,
else watchNamespaces, else the release namespace. */}}
{{- define "virtrigaud.secretNamespaces" -}}
{{- $namespaces := .Values.rbac.secretNamespaces | default .Values.watchNamespaces | default (list .Release.Namespace) -}}
{{- $namespaces | uniq | toJson -}}
{{- end -}}

{{/* The rules on the controller's own objects and their Events: in the ClusterRole, or in
a Role per namespace of watchNamespaces. */}}
{{- define "virtrigaud.objectRules" -}}
# The leader's informers (leader/routing.py ROUTES).
- apiGroups: ["infra.virtrigaud.io"]
  resources: [virtualmachines, providers, vmclasses, vmimages, vmnetworkattachments, vmsnapshots, vmclones, vmmigrations, vmsets, vmplacementpolicies]
  verbs: [list, watch]
# A shard reads what a VM names (controllers/common/resolve.py), the VM a VMSnapshot or a
# VMClone acts on and a clone's target (vmsnapshot/passbase.py read_vm,
# vmclone/reconciler.py source_vm, target_vm), the VMSnapshot a VM reverts to
# (virtualmachine/revert.py), and the object of a key it holds no copy of (each kind's
# reconciler.py reconcile; common/dependency.py for VMClasses, VMImages and
# VMNetworkAttachments), the VMPlacementPolicy a VM names (virtualmachine/placement.py,
# and read as stored before a placement: vmplacementpolicy/reserve.py).
# The VMs that use a VMPlacementPolicy are listed with the leader's list grant
# (vmplacementpolicy/users.py).
- apiGroups: ["infra.virtrigaud.io"]
  resources: [virtualmachines, providers, vmclasses, vmimages, vmnetworkattachments, vmsnapshots, vmsets, vmclones, vmplacementpolicies]
  verbs: [get]
# Finalizers, a merge patch guarded by resourceVersion (controllers/common/objects.py), of
# VMs, VMSnapshots, VMSets and Providers (provider/reconciler.py: held while VMs use it);
# also a VMClone clearing its target VM's cloned-by annotation
# (vmclone/reconciler.py finished), a VMSet orphaning its VMs (vmset/reconciler.py
# finalize), a deleted VM marking the VMSnapshots it keeps (virtualmachine/delete.py).
- apiGroups: ["infra.virtrigaud.io"]
  resources: [virtualmachines, vmsnapshots, vmsets, providers]
  verbs: [patch]
# Status, a PUT of the /status subresource (controllers/common/objects.py write_status,
# through common/status.py for Providers, VMClasses, VMImages, VMNetworkAttachments and
# VMPlacementPolicies; a VM's placement reserving its host in its VMPlacementPolicy's
# status: vmplacementpolicy/reserve.py).
- apiGroups: ["infra.virtrigaud.io"]
  resources: [virtualmachines/status, vmsnapshots/status, vmsets/status, vmclones/status, providers/status, vmclasses/status, vmimages/status, vmnetworkattachments/status, vmplacementpolicies/status]
  verbs: [update]
# A VMSet creates and deletes its VMs (vmset/reconciler.py apply); a VMClone creates its
# target VM (vmclone/reconciler.py target_vm); an adopting Provider creates the VMs it
# adopts (provider/adoption.py create_vm).
- apiGroups: ["infra.virtrigaud.io"]
  resources: [virtualmachines]
  verbs: [create, delete]
# An adopting Provider creates a VMClass per shape of the VMs it adopts
# (provider/adoption.py ensure_class).
- apiGroups: ["infra.virtrigaud.io"]
  resources: [vmclasses]
  verbs: [create]
# A snapshot schedule creates the VMSnapshots of its firings and deletes those beyond
# maxCount (vmsnapshot/scheduled.py); a deleted VM deletes its VMSnapshots
# (virtualmachine/delete.py delete_snapshot_objects); a VMSnapshot past its retention or
# whose VM is gone deletes itself (vmsnapshot/passbase.py delete_self).
- apiGroups: ["infra.virtrigaud.io"]
  resources: [vmsnapshots]
  verbs: [create, delete]
# No request of the controller uses this: a VMSet's VMs and a VMClone's target VM carry an
# ownerReference with blockOwnerDeletion: true (vmset/reconciler.py, vmclone/reconciler.py),
# as do a managed remote Provider's Deployment and Service (provider/workload.py), and
# where the OwnerReferencesPermissionEnforcement admission plugin runs (OpenShift,
# hardened clusters) creating such an object requires update of the owner's finalizers.
- apiGroups: ["infra.virtrigaud.io"]
  resources: [vmsets/finalizers, vmclones/finalizers, providers/finalizers]
  verbs: [update]
# A remote Provider with spec.runtime.image runs its provider server in a Deployment behind
# a Service, both in its namespace (provider/managed.py): read once per pass, created,
# replaced when the spec changes or they were edited or deleted by hand, deleted with the
# Provider (no list or watch: the Provider's passes look again).
- apiGroups: ["apps"]
  resources: [deployments]
  verbs: [get, create, update, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, update, delete]
# Events next to the object; a repeated Event is counted by a patch (kube/events.py).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
