package main

// The built-in kinds kubelite serves on the generic registry, each described once: its
// storage, the server-side behaviour kube-apiserver gives it (Secret stringData folding,
// a Namespace's phase), the field selectors it accepts and its kubectl table.

import (
	"context"
	"fmt"
	"sort"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage/names"
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
		gv: corev1.SchemeGroupVersion, resource: "serviceaccounts", singular: "serviceaccount", namespaced: true, short: []string{"sa"},
		newObj: func() runtime.Object { return &corev1.ServiceAccount{} }, newList: func() runtime.Object { return &corev1.ServiceAccountList{} },
		table: serviceAccountTable,
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
	for _, group := range [][]kind{coreKinds, coordinationKinds, rbacKinds} {
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
	must(s.CompleteWithOptions(&generic.StoreOptions{RESTOptions: getter, AttrFunc: k.attrs}))
	return shortNamedStore{s, k.short}
}

func storageMap(getter generic.RESTOptionsGetter, kinds []kind) map[string]rest.Storage {
	out := map[string]rest.Storage{}
	for _, k := range kinds {
		out[k.resource] = k.newStore(getter)
	}
	return out
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
	if s.kind.onCreate != nil {
		s.kind.onCreate(obj)
	}
	if s.kind.normalize != nil {
		s.kind.normalize(obj)
	}
}
func (s kindStrategy) PrepareForUpdate(_ context.Context, obj, _ runtime.Object) {
	if s.kind.normalize != nil {
		s.kind.normalize(obj)
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
