package main

// The built-in kinds kubelite serves on the generic registry, each described once: its
// storage, the server-side behaviour kube-apiserver gives it (Secret stringData folding,
// a Namespace's phase, a Deployment's generation and status subresource), the field
// selectors it accepts and its kubectl table.

import (
	"context"
	"fmt"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"
)

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

// kind is one built-in resource as kubelite serves it.
type kind struct {
	gv         schema.GroupVersion
	resource   string
	singular   string
	namespaced bool
	newObj     func() runtime.Object
	newList    func() runtime.Object
	short      []string
	// onCreate sets what the server owns on a new object (a Namespace's phase).
	onCreate func(runtime.Object)
	// normalize runs on every create and update: what kube-apiserver's defaulting and
	// v1→internal conversion do (a Secret's stringData folded into data).
	normalize func(runtime.Object)
	// fields are the field selectors beyond metadata.name/namespace, as upstream's
	// pkg/registry/<group>/<kind>/strategy.go ToSelectableFields defines them.
	fields func(runtime.Object) fields.Set
	table  rest.TableConvertor
	// status, when set, gives the kind a status subresource (<resource>/status).
	status *statusSubresource
}

// statusSubresource is what upstream's strategies do for a kind with a status: the main
// resource keeps the stored status (a write there cannot change it), the status
// subresource keeps everything else, and metadata.generation counts spec changes.
type statusSubresource struct {
	// clear empties the status of a new object.
	clear func(obj runtime.Object)
	// keepStatus copies old's status into obj; keepSpec copies old's spec into obj.
	keepStatus, keepSpec func(obj, old runtime.Object)
	// spec returns the part of the object whose changes bump metadata.generation.
	spec func(obj runtime.Object) interface{}
}

var coreKinds = []kind{
	{
		gv: corev1.SchemeGroupVersion, resource: "namespaces", singular: "namespace", short: []string{"ns"},
		newObj: func() runtime.Object { return &corev1.Namespace{} }, newList: func() runtime.Object { return &corev1.NamespaceList{} },
		onCreate: func(obj runtime.Object) { obj.(*corev1.Namespace).Status.Phase = corev1.NamespaceActive },
		fields: func(obj runtime.Object) fields.Set {
			return fields.Set{"status.phase": string(obj.(*corev1.Namespace).Status.Phase)}
		},
		table: namespaceTable,
	},
	{
		gv: corev1.SchemeGroupVersion, resource: "configmaps", singular: "configmap", namespaced: true, short: []string{"cm"},
		newObj: func() runtime.Object { return &corev1.ConfigMap{} }, newList: func() runtime.Object { return &corev1.ConfigMapList{} },
		table: configMapTable,
	},
	{
		gv: corev1.SchemeGroupVersion, resource: "secrets", singular: "secret", namespaced: true,
		newObj: func() runtime.Object { return &corev1.Secret{} }, newList: func() runtime.Object { return &corev1.SecretList{} },
		normalize: normalizeSecret,
		fields:    func(obj runtime.Object) fields.Set { return fields.Set{"type": string(obj.(*corev1.Secret).Type)} },
		table:     secretTable,
	},
	{
		gv: corev1.SchemeGroupVersion, resource: "events", singular: "event", namespaced: true, short: []string{"ev"},
		newObj: func() runtime.Object { return &corev1.Event{} }, newList: func() runtime.Object { return &corev1.EventList{} },
		fields: eventFields,
		table:  eventTable,
	},
	{
		gv: corev1.SchemeGroupVersion, resource: "services", singular: "service", namespaced: true, short: []string{"svc"},
		newObj: func() runtime.Object { return &corev1.Service{} }, newList: func() runtime.Object { return &corev1.ServiceList{} },
		normalize: normalizeService,
		table:     serviceTable,
	},
	{
		gv: corev1.SchemeGroupVersion, resource: "serviceaccounts", singular: "serviceaccount", namespaced: true, short: []string{"sa"},
		newObj: func() runtime.Object { return &corev1.ServiceAccount{} }, newList: func() runtime.Object { return &corev1.ServiceAccountList{} },
		table: serviceAccountTable,
	},
}

// Deployments are stored and served (spec, status subresource, generation) but nothing
// runs them: kubelite has no controller-manager, so their status changes only when a
// client writes deployments/status.
var appsKinds = []kind{
	{
		gv: appsv1.SchemeGroupVersion, resource: "deployments", singular: "deployment", namespaced: true, short: []string{"deploy"},
		newObj: func() runtime.Object { return &appsv1.Deployment{} }, newList: func() runtime.Object { return &appsv1.DeploymentList{} },
		status: &statusSubresource{
			clear:      func(obj runtime.Object) { obj.(*appsv1.Deployment).Status = appsv1.DeploymentStatus{} },
			keepStatus: func(obj, old runtime.Object) { obj.(*appsv1.Deployment).Status = old.(*appsv1.Deployment).Status },
			keepSpec:   func(obj, old runtime.Object) { obj.(*appsv1.Deployment).Spec = old.(*appsv1.Deployment).Spec },
			spec:       func(obj runtime.Object) interface{} { return obj.(*appsv1.Deployment).Spec },
		},
		table: deploymentTable,
	},
}

var coordinationKinds = []kind{
	{
		gv: coordv1.SchemeGroupVersion, resource: "leases", singular: "lease", namespaced: true,
		newObj: func() runtime.Object { return &coordv1.Lease{} }, newList: func() runtime.Object { return &coordv1.LeaseList{} },
		table: leaseTable,
	},
}

var rbacKinds = []kind{
	{
		gv: rbacv1.SchemeGroupVersion, resource: "roles", singular: "role", namespaced: true,
		newObj: func() runtime.Object { return &rbacv1.Role{} }, newList: func() runtime.Object { return &rbacv1.RoleList{} },
		table: rest.NewDefaultTableConvertor(rbacv1.Resource("roles")),
	},
	{
		gv: rbacv1.SchemeGroupVersion, resource: "clusterroles", singular: "clusterrole",
		newObj: func() runtime.Object { return &rbacv1.ClusterRole{} }, newList: func() runtime.Object { return &rbacv1.ClusterRoleList{} },
		table: rest.NewDefaultTableConvertor(rbacv1.Resource("clusterroles")),
	},
	{
		gv: rbacv1.SchemeGroupVersion, resource: "rolebindings", singular: "rolebinding", namespaced: true,
		newObj: func() runtime.Object { return &rbacv1.RoleBinding{} }, newList: func() runtime.Object { return &rbacv1.RoleBindingList{} },
		table: roleBindingTable,
	},
	{
		gv: rbacv1.SchemeGroupVersion, resource: "clusterrolebindings", singular: "clusterrolebinding",
		newObj: func() runtime.Object { return &rbacv1.ClusterRoleBinding{} }, newList: func() runtime.Object { return &rbacv1.ClusterRoleBindingList{} },
		table: roleBindingTable,
	},
}

// The built-in types are registered as their own internal version: there is no
// conversion to do, and the generic store only needs a scheme that knows them.
func init() {
	for _, group := range [][]kind{coreKinds, appsKinds, coordinationKinds, rbacKinds} {
		gv := group[0].gv
		internal := schema.GroupVersion{Group: gv.Group, Version: runtime.APIVersionInternal}
		for _, k := range group {
			obj, list := k.newObj(), k.newList()
			scheme.AddKnownTypes(gv, obj, list)
			scheme.AddKnownTypes(internal, k.newObj(), k.newList())
			k.registerFieldSelectors(obj)
			if k.normalize != nil {
				// Decoding a request body runs the scheme's defaulters: the object is
				// normalized before admission and field management see it, as upstream's
				// conversion to the internal version does. Apply patches skip decoding;
				// the strategy normalizes those.
				normalize := k.normalize
				scheme.AddTypeDefaultingFunc(obj, func(o interface{}) { normalize(o.(runtime.Object)) })
			}
		}
		metav1.AddToGroupVersion(scheme, gv)
		must(scheme.SetVersionPriority(gv))
	}
	scheme.AddUnversionedTypes(corev1.SchemeGroupVersion,
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
}

// registerFieldSelectors lets list and watch requests select on the kind's fields. The
// generic handler converts each selector label through the scheme, which otherwise
// knows only metadata.name and metadata.namespace.
func (k kind) registerFieldSelectors(example runtime.Object) {
	if k.fields == nil {
		return
	}
	supported := map[string]bool{"metadata.name": true, "metadata.namespace": k.namespaced}
	for label := range k.fields(example) {
		supported[label] = true
	}
	gvk := k.gv.WithKind(kindName(example))
	must(scheme.AddFieldLabelConversionFunc(gvk, func(label, value string) (string, string, error) {
		if !supported[label] {
			var known []string
			for l, ok := range supported {
				if ok {
					known = append(known, l)
				}
			}
			sort.Strings(known)
			return "", "", fmt.Errorf("field label not supported: %s (%s supports %v)", label, gvk.Kind, known)
		}
		return label, value, nil
	}))
}

func kindName(obj runtime.Object) string {
	gvks, _, err := scheme.ObjectKinds(obj)
	must(err)
	return gvks[0].Kind
}

// attrs is the storage layer's view of an object for label and field selection.
func (k kind) attrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, nil, err
	}
	set := fields.Set{"metadata.name": m.GetName()}
	if k.namespaced {
		set["metadata.namespace"] = m.GetNamespace()
	}
	if k.fields != nil {
		set = generic.MergeFieldsSets(set, k.fields(obj))
	}
	return labels.Set(m.GetLabels()), set, nil
}

type shortNamedStore struct {
	*genericregistry.Store
	short []string
}

func (s shortNamedStore) ShortNames() []string { return s.short }

func (k kind) newStore(getter generic.RESTOptionsGetter) shortNamedStore {
	st := kindStrategy{scheme, names.SimpleNameGenerator, k}
	s := &genericregistry.Store{
		NewFunc:                   k.newObj,
		NewListFunc:               k.newList,
		DefaultQualifiedResource:  schema.GroupResource{Group: k.gv.Group, Resource: k.resource},
		SingularQualifiedResource: schema.GroupResource{Group: k.gv.Group, Resource: k.singular},
		CreateStrategy:            st,
		UpdateStrategy:            st,
		DeleteStrategy:            st,
		TableConvertor:            k.table,
	}
	if k.status != nil {
		s.ResetFieldsStrategy = st
	}
	must(s.CompleteWithOptions(&generic.StoreOptions{RESTOptions: getter, AttrFunc: k.attrs}))
	return shortNamedStore{s, k.short}
}

func storageMap(getter generic.RESTOptionsGetter, kinds []kind) map[string]rest.Storage {
	out := map[string]rest.Storage{}
	for _, k := range kinds {
		store := k.newStore(getter)
		out[k.resource] = store
		if k.status != nil {
			status := *store.Store
			status.CreateStrategy = nil
			status.DeleteStrategy = nil
			st := statusStrategy{kindStrategy{scheme, names.SimpleNameGenerator, k}}
			status.UpdateStrategy = st
			status.ResetFieldsStrategy = st
			out[k.resource+"/status"] = &statusREST{&status}
		}
	}
	return out
}

// statusREST serves <resource>/status: get, update and patch of the status alone.
type statusREST struct{ store *genericregistry.Store }

func (r *statusREST) New() runtime.Object { return r.store.New() }
func (r *statusREST) Destroy()            {}
func (r *statusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}
func (r *statusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc,
	updateValidation rest.ValidateObjectUpdateFunc, _ bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	// The status subresource never creates an object.
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}
func (r *statusREST) ConvertToTable(ctx context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return r.store.ConvertToTable(ctx, object, tableOptions)
}
func (r *statusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

// kindStrategy validates object metadata only; the built-ins served here carry no
// semantics the operator depends on beyond storage, resourceVersion, watch and the
// normalization above.
type kindStrategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	kind kind
}

func (s kindStrategy) NamespaceScoped() bool { return s.kind.namespaced }
func (s kindStrategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	if s.kind.status != nil {
		s.kind.status.clear(obj)
		m, _ := meta.Accessor(obj)
		m.SetGeneration(1)
	}
	if s.kind.onCreate != nil {
		s.kind.onCreate(obj)
	}
	if s.kind.normalize != nil {
		s.kind.normalize(obj)
	}
}
func (s kindStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	if st := s.kind.status; st != nil {
		st.keepStatus(obj, old)
		// The generic store has already set the stored generation; a spec change adds one.
		if !equality.Semantic.DeepEqual(st.spec(obj), st.spec(old)) {
			m, _ := meta.Accessor(obj)
			m.SetGeneration(m.GetGeneration() + 1)
		}
	}
	if s.kind.normalize != nil {
		s.kind.normalize(obj)
	}
}

// GetResetFields: server-side apply to the main resource does not own status fields,
// and apply to the status subresource owns nothing else (upstream's reset fields).
func (s kindStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	if s.kind.status == nil {
		return nil
	}
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(s.kind.gv.String()): fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

// statusStrategy is the strategy of <resource>/status: only the status changes.
type statusStrategy struct{ kindStrategy }

func (s statusStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	s.kind.status.keepSpec(obj, old)
	m, _ := meta.Accessor(obj)
	om, _ := meta.Accessor(old)
	m.SetLabels(om.GetLabels())
	m.SetAnnotations(om.GetAnnotations())
}
func (s statusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(s.kind.gv.String()): fieldpath.NewSet(
			fieldpath.MakePathOrDie("spec"), fieldpath.MakePathOrDie("metadata", "labels"),
			fieldpath.MakePathOrDie("metadata", "annotations"),
		),
	}
}
func (s kindStrategy) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	m, _ := meta.Accessor(obj)
	return apimachineryvalidation.ValidateObjectMetaAccessor(m, s.kind.namespaced, path.ValidatePathSegmentName, field.NewPath("metadata"))
}
func (s kindStrategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }
func (s kindStrategy) Canonicalize(runtime.Object)                               {}
func (s kindStrategy) AllowCreateOnUpdate() bool                                 { return false }
func (s kindStrategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	m, _ := meta.Accessor(obj)
	om, _ := meta.Accessor(old)
	return apimachineryvalidation.ValidateObjectMetaAccessorUpdate(m, om, field.NewPath("metadata"))
}
func (s kindStrategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}
func (s kindStrategy) AllowUnconditionalUpdate() bool { return true }

// normalizeSecret does what kube-apiserver's Secret defaulting and conversion do: an
// empty type is Opaque, each stringData entry overwrites the data entry of the same key,
// and stringData is never stored.
func normalizeSecret(obj runtime.Object) {
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return
	}
	if s.Type == "" {
		s.Type = corev1.SecretTypeOpaque
	}
	if len(s.StringData) > 0 && s.Data == nil {
		s.Data = make(map[string][]byte, len(s.StringData))
	}
	for k, v := range s.StringData {
		s.Data[k] = []byte(v)
	}
	s.StringData = nil
}

// eventFields are the selectors upstream's event strategy offers; kubectl describe
// selects a describee's Events by involvedObject.{name,namespace,kind,uid}.
func eventFields(obj runtime.Object) fields.Set {
	e := obj.(*corev1.Event)
	source := e.Source.Component
	if source == "" {
		source = e.ReportingController
	}
	return fields.Set{
		"involvedObject.kind":            e.InvolvedObject.Kind,
		"involvedObject.namespace":       e.InvolvedObject.Namespace,
		"involvedObject.name":            e.InvolvedObject.Name,
		"involvedObject.uid":             string(e.InvolvedObject.UID),
		"involvedObject.apiVersion":      e.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       e.InvolvedObject.FieldPath,
		"reason":                         e.Reason,
		"reportingComponent":             e.ReportingController,
		"source":                         source,
		"type":                           e.Type,
	}
}

// normalizeService does what kube-apiserver's Service defaulting does to the fields a
// client reads back: type ClusterIP, protocol TCP and a targetPort equal to the port.
// No cluster IP is allocated (nothing routes to it here).
func normalizeService(obj runtime.Object) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return
	}
	if svc.Spec.Type == "" {
		svc.Spec.Type = corev1.ServiceTypeClusterIP
	}
	if svc.Spec.SessionAffinity == "" {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort == (intstr.IntOrString{}) {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
}
