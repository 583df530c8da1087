// kubelite: the VirtRigaud dev-stack Kubernetes API server.
//
// It is the upstream k8s.io/apiextensions-apiserver (real CRD serving: structural
// schemas, CEL, defaulting, status subresource, server-side apply, watch cache) plus the
// few built-in kinds an operator touches (Namespace, ConfigMap, Secret, Event,
// ServiceAccount, Service, apps/v1 Deployment, coordination.k8s.io Lease,
// rbac.authorization.k8s.io roles and bindings) on the generic registry, all stored in
// etcd (registry.go, tables.go). Nothing runs a Deployment or routes a Service: there is
// no controller-manager, scheduler or kubelet.
// By default every request is allowed; --token-auth-file with --authorization-mode=RBAC
// turns on static-token authentication and RBAC (rbac.go). There is no webhook
// admission: it is for tests and demos on loopback only.
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
	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiexthelpers "k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	eapiserver "k8s.io/apiextensions-apiserver/pkg/apiserver"
	apiextclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apiextinformers "k8s.io/apiextensions-apiserver/pkg/client/informers/externalversions"
	extopts "k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/admission"
	"k8s.io/apiserver/pkg/authentication/user"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	"k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/kubernetes"
	clientscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	netutils "k8s.io/utils/net"

	generatedopenapi "kubelite/openapi"
)

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
	tokenAuthFile := fs.String("token-auth-file", "",
		"authenticate bearer tokens listed in this token,user,uid,\"group1,group2\" CSV file (reread when it changes)")
	authorizationMode := fs.String("authorization-mode", "AlwaysAllow", "AlwaysAllow, or RBAC over the stored roles and bindings")
	authorizationLog := fs.String("authorization-log-file", "", "with RBAC: append every authorization decision to this file as JSON lines")
	// Standalone: no delegating kube-apiserver for authn/authz; unless RBAC is on,
	// everything is allowed.
	o.RecommendedOptions.Authentication.RemoteKubeConfigFileOptional = true
	o.RecommendedOptions.Authorization.RemoteKubeConfigFileOptional = true
	o.RecommendedOptions.Authorization.AlwaysAllowGroups = []string{"system:masters", "system:unauthenticated", "system:authenticated"}
	o.RecommendedOptions.Authorization.AlwaysAllowPaths = []string{"/*"}
	o.RecommendedOptions.CoreAPI = nil
	o.RecommendedOptions.Admission = nil
	o.RecommendedOptions.Features.EnablePriorityAndFairness = false
	must(fs.Parse(os.Args[1:]))
	switch {
	case *authorizationMode != "AlwaysAllow" && *authorizationMode != "RBAC":
		must(fmt.Errorf("--authorization-mode=%s: use AlwaysAllow or RBAC", *authorizationMode))
	case *authorizationMode == "RBAC" && *tokenAuthFile == "":
		must(fmt.Errorf("--authorization-mode=RBAC needs --token-auth-file: tokens are the only way to authenticate"))
	case *authorizationLog != "" && *authorizationMode != "RBAC":
		must(fmt.Errorf("--authorization-log-file needs --authorization-mode=RBAC"))
	}
	must(o.ServerRunOptions.ComponentGlobalsRegistry.Set())
	must(o.Complete())
	must(o.Validate())
	must(o.RecommendedOptions.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil,
		[]net.IP{netutils.ParseIPSloppy("127.0.0.1")}))

	serverConfig := genericapiserver.NewRecommendedConfig(eapiserver.Codecs)
	must(o.ServerRunOptions.ApplyTo(&serverConfig.Config))
	must(o.RecommendedOptions.ApplyTo(serverConfig))
	if *tokenAuthFile != "" {
		authn, err := newAuthenticator(*tokenAuthFile)
		must(err)
		serverConfig.Authentication.Authenticator = authn
	}
	var rbac *rbacAuthorizer
	if *authorizationMode == "RBAC" {
		decisions, err := openDecisionLog(*authorizationLog)
		must(err)
		// Its stores are filled in once the registries exist, before serving starts.
		rbac = &rbacAuthorizer{privilegedGroups: []string{user.SystemPrivilegedGroup}, log: decisions}
		serverConfig.Authorization.Authorizer = rbac
	}
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
	etcd.StorageConfig.Codec = codecs.LegacyCodec(corev1.SchemeGroupVersion, appsv1.SchemeGroupVersion, coordv1.SchemeGroupVersion, rbacv1.SchemeGroupVersion)
	getter := etcd.CreateRESTOptionsGetter(&genericoptions.SimpleStorageFactory{StorageConfig: etcd.StorageConfig}, serverConfig.ResourceTransformers)
	pc := runtime.NewParameterCodec(scheme)

	install := func(kinds []kind) map[string]rest.Storage {
		gv := kinds[0].gv
		info := genericapiserver.NewDefaultAPIGroupInfo(gv.Group, scheme, pc, codecs)
		info.VersionedResourcesStorageMap[gv.Version] = storageMap(getter, kinds)
		if gv.Group == "" {
			must(server.GenericAPIServer.InstallLegacyAPIGroup("/api", &info))
		} else {
			must(server.GenericAPIServer.InstallAPIGroup(&info))
		}
		return info.VersionedResourcesStorageMap[gv.Version]
	}
	core := install(coreKinds)
	nsl.namespaces = core["namespaces"].(shortNamedStore).Store
	install(appsKinds)
	install(coordinationKinds)
	rbacStores := install(rbacKinds)
	if rbac != nil {
		rbac.roles = rbacStores["roles"].(shortNamedStore).Store
		rbac.clusterRoles = rbacStores["clusterroles"].(shortNamedStore).Store
		rbac.roleBindings = rbacStores["rolebindings"].(shortNamedStore).Store
		rbac.clusterRoleBindings = rbacStores["clusterrolebindings"].(shortNamedStore).Store
	}

	server.GenericAPIServer.AddPostStartHookOrDie("bootstrap-namespaces", bootstrapNamespaces)
	server.GenericAPIServer.AddPostStartHookOrDie("bootstrap-rbac-policy", bootstrapPolicy)
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
