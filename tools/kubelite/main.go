// kubelite: the VirtRigaud dev-stack Kubernetes API server.
//
// It is the upstream k8s.io/apiextensions-apiserver (real CRD serving: structural
// schemas, CEL, defaulting, status subresource, server-side apply, watch cache) plus the
// few built-in kinds an operator touches (Namespace, ConfigMap, Secret, Event,
// ServiceAccount, coordination.k8s.io Lease) on the generic registry, all stored in etcd.
// There is no authentication, authorization or webhook admission: it is for tests and
// demos on loopback only.
package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"sort"
	"sync"

	"github.com/spf13/pflag"
	noopoteltrace "go.opentelemetry.io/otel/trace/noop"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apiexthelpers "k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	eapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apiextinformers "k8s.io/apiextensions-apiserver/pkg/client/informers/externalversions"
	extopts "k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	"k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/admission"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/storage/names"
	"k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/kubernetes"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	netutils "k8s.io/utils/net"

	generatedopenapi "kubelite/openapi"
)

var (
	scheme        = runtime.NewScheme()
	codecs        = serializer.NewCodecFactory(scheme)
	internalCore  = schema.GroupVersion{Group: "", Version: runtime.APIVersionInternal}
	internalCoord = schema.GroupVersion{Group: coordv1.GroupName, Version: runtime.APIVersionInternal}
)

// The built-in types are registered as their own internal version: there is no
// conversion to do, and the generic store only needs a scheme that knows them.
func init() {
	core := []runtime.Object{
		&corev1.Namespace{}, &corev1.NamespaceList{}, &corev1.ConfigMap{}, &corev1.ConfigMapList{},
		&corev1.Secret{}, &corev1.SecretList{}, &corev1.Event{}, &corev1.EventList{},
		&corev1.ServiceAccount{}, &corev1.ServiceAccountList{},
	}
	scheme.AddKnownTypes(corev1.SchemeGroupVersion, core...)
	scheme.AddKnownTypes(internalCore, core...)
	coord := []runtime.Object{&coordv1.Lease{}, &coordv1.LeaseList{}}
	scheme.AddKnownTypes(coordv1.SchemeGroupVersion, coord...)
	scheme.AddKnownTypes(internalCoord, coord...)
	metav1.AddToGroupVersion(scheme, corev1.SchemeGroupVersion)
	metav1.AddToGroupVersion(scheme, coordv1.SchemeGroupVersion)
	scheme.AddUnversionedTypes(schema.GroupVersion{Group: "", Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{}, &metav1.APIResourceList{})
	scheme.SetVersionPriority(corev1.SchemeGroupVersion)
	scheme.SetVersionPriority(coordv1.SchemeGroupVersion)
}

// plainStrategy validates object metadata only; the built-ins served here carry no
// semantics the operator depends on beyond storage, resourceVersion and watch.
type plainStrategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	namespaced bool
	prepare    func(obj runtime.Object)
}

func (s plainStrategy) NamespaceScoped() bool { return s.namespaced }
func (s plainStrategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	if s.prepare != nil {
		s.prepare(obj)
	}
}
func (s plainStrategy) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	m, _ := meta.Accessor(obj)
	return apimachineryvalidation.ValidateObjectMetaAccessor(m, s.namespaced, path.ValidatePathSegmentName, field.NewPath("metadata"))
}
func (s plainStrategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }
func (s plainStrategy) Canonicalize(runtime.Object)                              {}
func (s plainStrategy) AllowCreateOnUpdate() bool                                { return false }
func (s plainStrategy) PrepareForUpdate(context.Context, runtime.Object, runtime.Object) {
}
func (s plainStrategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	m, _ := meta.Accessor(obj)
	om, _ := meta.Accessor(old)
	return apimachineryvalidation.ValidateObjectMetaAccessorUpdate(m, om, field.NewPath("metadata"))
}
func (s plainStrategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}
func (s plainStrategy) AllowUnconditionalUpdate() bool { return true }

type shortNamedStore struct {
	*genericregistry.Store
	short []string
}

func (s shortNamedStore) ShortNames() []string { return s.short }

// namespaceLifecycle refuses new objects in a missing (404) or terminating (403)
// namespace, as kube-apiserver's NamespaceLifecycle admission plugin does.
type namespaceLifecycle struct{ namespaces *genericregistry.Store }

func (l *namespaceLifecycle) Handles(op admission.Operation) bool { return op == admission.Create }
func (l *namespaceLifecycle) Validate(ctx context.Context, a admission.Attributes, _ admission.ObjectInterfaces) error {
	if a.GetNamespace() == "" || l.namespaces == nil || (a.GetKind().Group == "" && a.GetKind().Kind == "Namespace") {
		return nil
	}
	obj, err := l.namespaces.Get(genericapirequest.WithNamespace(ctx, ""), a.GetNamespace(), &metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, a.GetNamespace())
	} else if err != nil {
		return apierrors.NewInternalError(err)
	}
	if obj.(*corev1.Namespace).DeletionTimestamp != nil {
		return apierrors.NewForbidden(a.GetResource().GroupResource(), a.GetName(),
			fmt.Errorf("unable to create new content in namespace %s because it is being terminated", a.GetNamespace()))
	}
	return nil
}

func newStore(getter generic.RESTOptionsGetter, gr schema.GroupResource, singular string, namespaced bool,
	newFn, newList func() runtime.Object, prepare func(runtime.Object), short ...string) rest.Storage {
	st := plainStrategy{scheme, names.SimpleNameGenerator, namespaced, prepare}
	s := &genericregistry.Store{
		NewFunc:                   newFn,
		NewListFunc:               newList,
		DefaultQualifiedResource:  gr,
		SingularQualifiedResource: schema.GroupResource{Group: gr.Group, Resource: singular},
		CreateStrategy:            st,
		UpdateStrategy:            st,
		DeleteStrategy:            st,
		TableConvertor:            rest.NewDefaultTableConvertor(gr),
	}
	if err := s.CompleteWithOptions(&generic.StoreOptions{RESTOptions: getter}); err != nil {
		panic(err)
	}
	return shortNamedStore{s, short}
}

type noServiceResolver struct{}

func (noServiceResolver) ResolveEndpoint(namespace, name string, _ int32) (*url.URL, error) {
	return nil, fmt.Errorf("service resolution is not supported (%s/%s)", namespace, name)
}

func must(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubelite:", err)
		os.Exit(1)
	}
}

func main() {
	o := extopts.NewCustomResourceDefinitionsServerOptions(os.Stdout, os.Stderr)
	fs := pflag.NewFlagSet("kubelite", pflag.ExitOnError)
	o.AddFlags(fs)
	// Standalone: no delegating kube-apiserver for authn/authz, everything allowed.
	o.RecommendedOptions.Authentication.RemoteKubeConfigFileOptional = true
	o.RecommendedOptions.Authorization.RemoteKubeConfigFileOptional = true
	o.RecommendedOptions.Authorization.AlwaysAllowGroups = []string{"system:masters", "system:unauthenticated", "system:authenticated"}
	o.RecommendedOptions.Authorization.AlwaysAllowPaths = []string{"/*"}
	o.RecommendedOptions.CoreAPI = nil
	o.RecommendedOptions.Admission = nil
	o.RecommendedOptions.Features.EnablePriorityAndFairness = false
	must(fs.Parse(os.Args[1:]))
	must(o.ServerRunOptions.ComponentGlobalsRegistry.Set())
	must(o.Complete())
	must(o.Validate())
	must(o.RecommendedOptions.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil,
		[]net.IP{netutils.ParseIPSloppy("127.0.0.1")}))

	serverConfig := genericapiserver.NewRecommendedConfig(eapiserver.Codecs)
	must(o.ServerRunOptions.ApplyTo(&serverConfig.Config))
	must(o.RecommendedOptions.ApplyTo(serverConfig))
	nsl := &namespaceLifecycle{}
	serverConfig.AdmissionControl = nsl
	must(o.APIEnablement.ApplyTo(&serverConfig.Config, eapiserver.DefaultAPIResourceConfigSource(), eapiserver.Scheme))
	definitions := openapi.GetOpenAPIDefinitionsWithoutDisabledFeatures(generatedopenapi.GetOpenAPIDefinitions)
	namer := openapinamer.NewDefinitionNamer(eapiserver.Scheme, clientscheme.Scheme)
	serverConfig.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(definitions, namer)
	// apiextensions publishes the CRDs' schemas (what `kubectl explain` reads, in v2 and v3)
	// only when the server also has a static v2 spec, as kube-apiserver does.
	serverConfig.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(definitions, namer)
	serverConfig.OpenAPIConfig.Info.Title = "kubelite"
	serverConfig.OpenAPIV3Config.Info.Title = "kubelite"
	config := &eapiserver.Config{
		GenericConfig: serverConfig,
		ExtraConfig: eapiserver.ExtraConfig{
			CRDRESTOptionsGetter: extopts.NewCRDRESTOptionsGetter(*o.RecommendedOptions.Etcd, serverConfig.ResourceTransformers, serverConfig.StorageObjectCountTracker),
			ServiceResolver:      noServiceResolver{},
			AuthResolverWrapper: webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil,
				serverConfig.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
		},
	}
	cc := config.Complete()
	// apiextensions turns discovery off because kube-apiserver's aggregator serves /apis.
	cc.GenericConfig.EnableDiscovery = true
	server, err := cc.New(genericapiserver.NewEmptyDelegate())
	must(err)

	etcd := *o.RecommendedOptions.Etcd
	etcd.StorageConfig.Prefix = "/registry"
	etcd.StorageConfig.Codec = codecs.LegacyCodec(corev1.SchemeGroupVersion, coordv1.SchemeGroupVersion)
	getter := etcd.CreateRESTOptionsGetter(&genericoptions.SimpleStorageFactory{StorageConfig: etcd.StorageConfig}, serverConfig.ResourceTransformers)
	pc := runtime.NewParameterCodec(scheme)

	coreInfo := genericapiserver.NewDefaultAPIGroupInfo("", scheme, pc, codecs)
	coreInfo.VersionedResourcesStorageMap["v1"] = map[string]rest.Storage{
		"namespaces": newStore(getter, schema.GroupResource{Resource: "namespaces"}, "namespace", false,
			func() runtime.Object { return &corev1.Namespace{} }, func() runtime.Object { return &corev1.NamespaceList{} },
			func(obj runtime.Object) { obj.(*corev1.Namespace).Status.Phase = corev1.NamespaceActive }, "ns"),
		"configmaps": newStore(getter, schema.GroupResource{Resource: "configmaps"}, "configmap", true,
			func() runtime.Object { return &corev1.ConfigMap{} }, func() runtime.Object { return &corev1.ConfigMapList{} }, nil, "cm"),
		"secrets": newStore(getter, schema.GroupResource{Resource: "secrets"}, "secret", true,
			func() runtime.Object { return &corev1.Secret{} }, func() runtime.Object { return &corev1.SecretList{} }, nil),
		"events": newStore(getter, schema.GroupResource{Resource: "events"}, "event", true,
			func() runtime.Object { return &corev1.Event{} }, func() runtime.Object { return &corev1.EventList{} }, nil, "ev"),
		"serviceaccounts": newStore(getter, schema.GroupResource{Resource: "serviceaccounts"}, "serviceaccount", true,
			func() runtime.Object { return &corev1.ServiceAccount{} }, func() runtime.Object { return &corev1.ServiceAccountList{} }, nil, "sa"),
	}
	nsl.namespaces = coreInfo.VersionedResourcesStorageMap["v1"]["namespaces"].(shortNamedStore).Store
	must(server.GenericAPIServer.InstallLegacyAPIGroup("/api", &coreInfo))

	coordInfo := genericapiserver.NewDefaultAPIGroupInfo(coordv1.GroupName, scheme, pc, codecs)
	coordInfo.VersionedResourcesStorageMap["v1"] = map[string]rest.Storage{
		"leases": newStore(getter, schema.GroupResource{Group: coordv1.GroupName, Resource: "leases"}, "lease", true,
			func() runtime.Object { return &coordv1.Lease{} }, func() runtime.Object { return &coordv1.LeaseList{} }, nil),
	}
	must(server.GenericAPIServer.InstallAPIGroup(&coordInfo))

	server.GenericAPIServer.AddPostStartHookOrDie("bootstrap-namespaces", bootstrapNamespaces)
	server.GenericAPIServer.AddPostStartHookOrDie("crd-legacy-discovery", func(hctx genericapiserver.PostStartHookContext) error {
		return serveCRDGroupsInLegacyDiscovery(hctx, server.GenericAPIServer.DiscoveryGroupManager)
	})
	ctx := genericapiserver.SetupSignalContext()
	must(server.GenericAPIServer.PrepareRun().RunWithContext(ctx))
}

func bootstrapNamespaces(hctx genericapiserver.PostStartHookContext) error {
	c, err := kubernetes.NewForConfig(hctx.LoopbackClientConfig)
	if err != nil {
		return err
	}
	for _, n := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		_, err := c.CoreV1().Namespaces().Create(context.TODO(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}

// serveCRDGroupsInLegacyDiscovery keeps /apis listing every established CRD group, which
// kube-apiserver's aggregator would otherwise do; kubectl needs it to resolve kinds.
func serveCRDGroupsInLegacyDiscovery(hctx genericapiserver.PostStartHookContext, dgm interface {
	AddGroup(metav1.APIGroup)
	RemoveGroup(string)
}) error {
	c, err := apiextclient.NewForConfig(hctx.LoopbackClientConfig)
	if err != nil {
		return err
	}
	inf := apiextinformers.NewSharedInformerFactory(c, 0)
	crdInf := inf.Apiextensions().V1().CustomResourceDefinitions()
	var mu sync.Mutex
	known := map[string]bool{}
	resync := func() {
		mu.Lock()
		defer mu.Unlock()
		crds, _ := crdInf.Lister().List(labels.Everything())
		groups := map[string][]string{}
		for _, crd := range crds {
			if !apiexthelpers.IsCRDConditionTrue(crd, apiextv1.Established) {
				continue
			}
			for _, v := range crd.Spec.Versions {
				if v.Served && !slices.Contains(groups[crd.Spec.Group], v.Name) {
					groups[crd.Spec.Group] = append(groups[crd.Spec.Group], v.Name)
				}
			}
		}
		for g := range known {
			if _, ok := groups[g]; !ok {
				dgm.RemoveGroup(g)
				delete(known, g)
			}
		}
		for g, vs := range groups {
			sort.Slice(vs, func(i, j int) bool { return version.CompareKubeAwareVersionStrings(vs[i], vs[j]) > 0 })
			ag := metav1.APIGroup{Name: g}
			for _, v := range vs {
				ag.Versions = append(ag.Versions, metav1.GroupVersionForDiscovery{GroupVersion: g + "/" + v, Version: v})
			}
			ag.PreferredVersion = ag.Versions[0]
			dgm.AddGroup(ag)
			known[g] = true
		}
	}
	_, err = crdInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(interface{}) { resync() },
		UpdateFunc: func(interface{}, interface{}) { resync() },
		DeleteFunc: func(interface{}) { resync() },
	})
	if err != nil {
		return err
	}
	inf.Start(hctx.Done())
	return nil
}
