package main

// The optional access-control mode (--token-auth-file, --authorization-mode=RBAC):
// static bearer tokens in kube-apiserver's token file format, and an RBAC evaluator
// over the Roles, ClusterRoles and bindings stored in this server, with the rule
// matching of k8s.io/kubernetes/plugin/pkg/auth/authorizer/rbac (not in the Debian
// sources this builds from). Every decision can be written to a JSON-lines log, so a
// test can fail on any denial and on any granted rule a run never needed.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/group"
	"k8s.io/apiserver/pkg/authentication/request/anonymous"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/request/union"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/token/tokenfile"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// ---------------------------------------------------------------- authentication

// tokenFile authenticates the bearer tokens of a token,user,uid,"group1,group2" CSV
// file. Unlike kube-apiserver it rereads the file when it changes, so a test can add an
// identity to a running server (write the new file beside it and rename it over).
type tokenFile struct {
	path    string
	mu      sync.Mutex
	modTime time.Time
	size    int64
	current *tokenfile.TokenAuthenticator
}

func (t *tokenFile) AuthenticateToken(ctx context.Context, token string) (*authenticator.Response, bool, error) {
	tokens, err := t.load()
	if err != nil {
		return nil, false, err
	}
	return tokens.AuthenticateToken(ctx, token)
}

func (t *tokenFile) load() (*tokenfile.TokenAuthenticator, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fi, err := os.Stat(t.path)
	if err == nil && t.current != nil && fi.ModTime().Equal(t.modTime) && fi.Size() == t.size {
		return t.current, nil
	}
	if err == nil {
		var tokens *tokenfile.TokenAuthenticator
		if tokens, err = tokenfile.NewCSV(t.path); err == nil {
			t.current, t.modTime, t.size = tokens, fi.ModTime(), fi.Size()
			return tokens, nil
		}
	}
	if t.current == nil {
		return nil, fmt.Errorf("token file %s: %w", t.path, err)
	}
	klog.Errorf("token file %s unreadable, still using its previous contents: %v", t.path, err)
	return t.current, nil
}

// newAuthenticator chains authentication as kube-apiserver does: a known bearer token
// is that user (plus system:authenticated); a request without credentials is
// system:anonymous; an unknown token is a 401, never anonymous.
func newAuthenticator(path string) (authenticator.Request, error) {
	tokens := &tokenFile{path: path}
	if _, err := tokens.load(); err != nil {
		return nil, err
	}
	known := group.NewAuthenticatedGroupAdder(bearertoken.New(tokens))
	return union.NewFailOnError(known, anonymous.NewAuthenticator(nil)), nil
}

// ---------------------------------------------------------------- authorization

// grant names one rule that matched a request: the binding, the role it binds, and the
// rule's index in that role's rules.
type grant struct {
	Binding string `json:"binding"` // ClusterRoleBinding/NAME or RoleBinding/NAMESPACE/NAME
	Role    string `json:"role"`    // ClusterRole/NAME or Role/NAMESPACE/NAME
	Rule    int    `json:"rule"`
}

type decision struct {
	allowed bool
	reason  string
	grants  []grant
}

// rbacAuthorizer allows a request when a rule of a role bound to the requester matches
// it. The stores are the server's own registries; they are set before serving starts.
type rbacAuthorizer struct {
	roles, clusterRoles, roleBindings, clusterRoleBindings *genericregistry.Store
	privilegedGroups                                       []string
	log                                                    *decisionLog
}

func (a *rbacAuthorizer) Authorize(ctx context.Context, attr authorizer.Attributes) (authorizer.Decision, string, error) {
	// The watch cache answers first; it can trail a binding whose write just returned,
	// so a denial is confirmed by a consistent read: a grant is never refused once the
	// client saw it stored.
	d := a.decide(ctx, attr, "0")
	if !d.allowed {
		d = a.decide(ctx, attr, "")
	}
	a.log.write(attr, d)
	if d.allowed {
		return authorizer.DecisionAllow, d.reason, nil
	}
	return authorizer.DecisionNoOpinion, d.reason, nil
}

func (a *rbacAuthorizer) decide(ctx context.Context, attr authorizer.Attributes, rv string) decision {
	u := attr.GetUser()
	for _, g := range u.GetGroups() {
		if slices.Contains(a.privilegedGroups, g) {
			return decision{allowed: true, reason: "member of the privileged group " + g}
		}
	}
	var d decision
	var problems []string
	clusterBindings, err := a.clusterRoleBindings.List(genericapirequest.WithNamespace(ctx, ""), &metainternalversion.ListOptions{ResourceVersion: rv})
	if err != nil {
		return decision{reason: "RBAC: listing clusterrolebindings: " + err.Error()}
	}
	for _, b := range clusterBindings.(*rbacv1.ClusterRoleBindingList).Items {
		if !appliesToAny(u, b.Subjects, "") {
			continue
		}
		problems = a.visit(ctx, attr, rv, "ClusterRoleBinding/"+b.Name, "", b.RoleRef, &d, problems)
	}
	if ns := attr.GetNamespace(); ns != "" {
		bindings, err := a.roleBindings.List(genericapirequest.WithNamespace(ctx, ns), &metainternalversion.ListOptions{ResourceVersion: rv})
		if err != nil {
			return decision{reason: "RBAC: listing rolebindings: " + err.Error()}
		}
		for _, b := range bindings.(*rbacv1.RoleBindingList).Items {
			if !appliesToAny(u, b.Subjects, ns) {
				continue
			}
			problems = a.visit(ctx, attr, rv, "RoleBinding/"+ns+"/"+b.Name, ns, b.RoleRef, &d, problems)
		}
	}
	if len(d.grants) > 0 {
		d.allowed = true
		g := d.grants[0]
		d.reason = fmt.Sprintf("RBAC: allowed by %s of %s rule %d", g.Binding, g.Role, g.Rule)
	} else if len(problems) > 0 {
		d.reason = "RBAC: " + strings.Join(problems, "; ")
	}
	return d
}

// visit records every rule of the bound role that matches the request; a missing role
// is noted (it grants nothing), as upstream does.
func (a *rbacAuthorizer) visit(ctx context.Context, attr authorizer.Attributes, rv, binding, ns string,
	ref rbacv1.RoleRef, d *decision, problems []string) []string {
	var rules []rbacv1.PolicyRule
	var role string
	opts := &metav1.GetOptions{ResourceVersion: rv}
	switch ref.Kind {
	case "ClusterRole":
		role = "ClusterRole/" + ref.Name
		obj, err := a.clusterRoles.Get(genericapirequest.WithNamespace(ctx, ""), ref.Name, opts)
		if err != nil {
			return append(problems, describeLookup(binding, role, err))
		}
		rules = obj.(*rbacv1.ClusterRole).Rules
	case "Role":
		role = "Role/" + ns + "/" + ref.Name
		if ns == "" {
			return append(problems, binding+" refers to a Role but is not namespaced")
		}
		obj, err := a.roles.Get(genericapirequest.WithNamespace(ctx, ns), ref.Name, opts)
		if err != nil {
			return append(problems, describeLookup(binding, role, err))
		}
		rules = obj.(*rbacv1.Role).Rules
	default:
		return append(problems, fmt.Sprintf("%s has roleRef.kind %q", binding, ref.Kind))
	}
	for i := range rules {
		if ruleAllows(attr, &rules[i]) {
			d.grants = append(d.grants, grant{Binding: binding, Role: role, Rule: i})
		}
	}
	return problems
}

func describeLookup(binding, role string, err error) string {
	if apierrors.IsNotFound(err) {
		return fmt.Sprintf("%s refers to %s, which does not exist", binding, role)
	}
	return fmt.Sprintf("%s: reading %s: %v", binding, role, err)
}

func appliesToAny(u user.Info, subjects []rbacv1.Subject, bindingNamespace string) bool {
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			if u.GetName() == s.Name {
				return true
			}
		case rbacv1.GroupKind:
			if slices.Contains(u.GetGroups(), s.Name) {
				return true
			}
		case rbacv1.ServiceAccountKind:
			// A RoleBinding's ServiceAccount subject without a namespace is in the
			// binding's namespace.
			ns := s.Namespace
			if ns == "" {
				ns = bindingNamespace
			}
			if ns != "" && serviceaccount.MatchesUsername(ns, s.Name, u.GetName()) {
				return true
			}
		}
	}
	return false
}

// ruleAllows is upstream's RBAC rule matching: verbs, API groups, resources (with
// "resource/subresource" and "*/subresource"), resourceNames, and for non-resource
// requests nonResourceURLs (with a trailing "*" as a prefix match).
func ruleAllows(attr authorizer.Attributes, rule *rbacv1.PolicyRule) bool {
	if !matchesOrAll(rule.Verbs, attr.GetVerb(), rbacv1.VerbAll) {
		return false
	}
	if !attr.IsResourceRequest() {
		for _, u := range rule.NonResourceURLs {
			if u == rbacv1.NonResourceAll || u == attr.GetPath() ||
				(strings.HasSuffix(u, "*") && strings.HasPrefix(attr.GetPath(), strings.TrimRight(u, "*"))) {
				return true
			}
		}
		return false
	}
	if !matchesOrAll(rule.APIGroups, attr.GetAPIGroup(), rbacv1.APIGroupAll) {
		return false
	}
	resource, sub := attr.GetResource(), attr.GetSubresource()
	combined := resource
	if sub != "" {
		combined = resource + "/" + sub
	}
	resourceMatch := false
	for _, r := range rule.Resources {
		if r == rbacv1.ResourceAll || r == combined || (sub != "" && r == "*/"+sub) {
			resourceMatch = true
			break
		}
	}
	if !resourceMatch {
		return false
	}
	return len(rule.ResourceNames) == 0 || slices.Contains(rule.ResourceNames, attr.GetName())
}

func matchesOrAll(values []string, want, all string) bool {
	return slices.Contains(values, all) || slices.Contains(values, want)
}

// ---------------------------------------------------------------- decision log

// decisionLog appends one JSON object per authorization decision.
type decisionLog struct {
	mu   sync.Mutex
	file *os.File
}

type decisionRecord struct {
	Time            string   `json:"time"`
	User            string   `json:"user"`
	Groups          []string `json:"groups"`
	Verb            string   `json:"verb"`
	APIGroup        string   `json:"apiGroup"`
	APIVersion      string   `json:"apiVersion"`
	Resource        string   `json:"resource"`
	Subresource     string   `json:"subresource"`
	Namespace       string   `json:"namespace"`
	Name            string   `json:"name"`
	ResourceRequest bool     `json:"resourceRequest"`
	Path            string   `json:"path"`
	Allowed         bool     `json:"allowed"`
	Reason          string   `json:"reason"`
	Grants          []grant  `json:"grants"`
}

func openDecisionLog(path string) (*decisionLog, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &decisionLog{file: f}, nil
}

func (l *decisionLog) write(attr authorizer.Attributes, d decision) {
	if l == nil {
		return
	}
	u := attr.GetUser()
	rec := decisionRecord{
		Time: time.Now().UTC().Format(time.RFC3339Nano), User: u.GetName(), Groups: u.GetGroups(),
		Verb: attr.GetVerb(), APIGroup: attr.GetAPIGroup(), APIVersion: attr.GetAPIVersion(),
		Resource: attr.GetResource(), Subresource: attr.GetSubresource(), Namespace: attr.GetNamespace(),
		Name: attr.GetName(), ResourceRequest: attr.IsResourceRequest(), Path: attr.GetPath(),
		Allowed: d.allowed, Reason: d.reason, Grants: d.grants,
	}
	if rec.Groups == nil {
		rec.Groups = []string{}
	}
	if rec.Grants == nil {
		rec.Grants = []grant{}
	}
	line, err := json.Marshal(rec)
	if err != nil {
		klog.Errorf("decision log: %v", err)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// One write per line, so a reader never sees half a record.
	if _, err := l.file.Write(append(line, '\n')); err != nil {
		klog.Errorf("decision log: %v", err)
	}
}

// ---------------------------------------------------------------- default policy

// bootstrapPolicy creates the default roles every cluster has, which grant any
// authenticated client discovery (kubectl needs it) and everyone the health and version
// endpoints, bound as kube-apiserver's bootstrap policy binds them.
func bootstrapPolicy(hctx genericapiserver.PostStartHookContext) error {
	c, err := kubernetes.NewForConfig(hctx.LoopbackClientConfig)
	if err != nil {
		return err
	}
	defaults := metav1.ObjectMeta{Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}}
	get := []string{"get"}
	public := []string{"/healthz", "/livez", "/readyz", "/version", "/version/"}
	roles := []rbacv1.ClusterRole{
		{Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}},
			{NonResourceURLs: []string{"*"}, Verbs: []string{"*"}},
		}},
		{Rules: []rbacv1.PolicyRule{{Verbs: get, NonResourceURLs: append(
			[]string{"/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*"}, public...)}}},
		{Rules: []rbacv1.PolicyRule{{Verbs: get, NonResourceURLs: public}}},
	}
	groups := [][]string{{user.SystemPrivilegedGroup}, {user.AllAuthenticated}, {user.AllAuthenticated, user.AllUnauthenticated}}
	for i, name := range []string{"cluster-admin", "system:discovery", "system:public-info-viewer"} {
		role := roles[i]
		role.ObjectMeta = *defaults.DeepCopy()
		role.Name = name
		if _, err := c.RbacV1().ClusterRoles().Create(context.TODO(), &role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		binding := rbacv1.ClusterRoleBinding{
			ObjectMeta: *defaults.DeepCopy(),
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		}
		binding.Name = name
		for _, g := range groups[i] {
			binding.Subjects = append(binding.Subjects, rbacv1.Subject{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: g})
		}
		if _, err := c.RbacV1().ClusterRoleBindings().Create(context.TODO(), &binding, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return nil
}
