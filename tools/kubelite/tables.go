package main

// Server-side tables (what `kubectl get` prints) for the built-in kinds, with the
// columns kube-apiserver's printers in k8s.io/kubernetes/pkg/printers/internalversion
// give them. That package is not in the Debian sources this builds from.

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
)

// tableConvertor turns an object or a list into rows of cells, one row per object.
type tableConvertor struct {
	columns []metav1.TableColumnDefinition
	cells   func(obj runtime.Object) []interface{}
}

func (c tableConvertor) ConvertToTable(_ context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	table := &metav1.Table{}
	add := func(obj runtime.Object) error {
		table.Rows = append(table.Rows, metav1.TableRow{Cells: c.cells(obj), Object: runtime.RawExtension{Object: obj}})
		return nil
	}
	if meta.IsListType(object) {
		if err := meta.EachListItem(object, add); err != nil {
			return nil, err
		}
	} else if err := add(object); err != nil {
		return nil, err
	}
	if m, err := meta.ListAccessor(object); err == nil {
		table.ResourceVersion = m.GetResourceVersion()
		table.Continue = m.GetContinue()
		table.RemainingItemCount = m.GetRemainingItemCount()
	} else if m, err := meta.CommonAccessor(object); err == nil {
		table.ResourceVersion = m.GetResourceVersion()
	}
	if opt, ok := tableOptions.(*metav1.TableOptions); !ok || !opt.NoHeaders {
		table.ColumnDefinitions = c.columns
	}
	return table, nil
}

var (
	metaDoc   = metav1.ObjectMeta{}.SwaggerDoc()
	nameCol   = metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name", Description: metaDoc["name"]}
	ageCol    = metav1.TableColumnDefinition{Name: "Age", Type: "string", Description: metaDoc["creationTimestamp"]}
	eventDoc  = corev1.Event{}.SwaggerDoc()
	secretDoc = corev1.Secret{}.SwaggerDoc()
)

func age(obj runtime.Object) string {
	m, _ := meta.Accessor(obj)
	return since(m.GetCreationTimestamp().Time)
}

func since(t time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t))
}

var namespaceTable = tableConvertor{
	columns: []metav1.TableColumnDefinition{
		nameCol, {Name: "Status", Type: "string", Description: "The status of the namespace"}, ageCol,
	},
	cells: func(obj runtime.Object) []interface{} {
		ns := obj.(*corev1.Namespace)
		return []interface{}{ns.Name, string(ns.Status.Phase), age(obj)}
	},
}

var configMapTable = tableConvertor{
	columns: []metav1.TableColumnDefinition{
		nameCol, {Name: "Data", Type: "string", Description: corev1.ConfigMap{}.SwaggerDoc()["data"]}, ageCol,
	},
	cells: func(obj runtime.Object) []interface{} {
		cm := obj.(*corev1.ConfigMap)
		return []interface{}{cm.Name, int64(len(cm.Data) + len(cm.BinaryData)), age(obj)}
	},
}

var secretTable = tableConvertor{
	columns: []metav1.TableColumnDefinition{
		nameCol,
		{Name: "Type", Type: "string", Description: secretDoc["type"]},
		{Name: "Data", Type: "string", Description: secretDoc["data"]},
		ageCol,
	},
	cells: func(obj runtime.Object) []interface{} {
		s := obj.(*corev1.Secret)
		return []interface{}{s.Name, string(s.Type), int64(len(s.Data)), age(obj)}
	},
}

var serviceAccountTable = tableConvertor{
	columns: []metav1.TableColumnDefinition{
		nameCol, {Name: "Secrets", Type: "string", Description: corev1.ServiceAccount{}.SwaggerDoc()["secrets"]}, ageCol,
	},
	cells: func(obj runtime.Object) []interface{} {
		sa := obj.(*corev1.ServiceAccount)
		return []interface{}{sa.Name, int64(len(sa.Secrets)), age(obj)}
	},
}

var leaseTable = tableConvertor{
	columns: []metav1.TableColumnDefinition{
		nameCol, {Name: "Holder", Type: "string", Description: coordv1.LeaseSpec{}.SwaggerDoc()["holderIdentity"]}, ageCol,
	},
	cells: func(obj runtime.Object) []interface{} {
		l := obj.(*coordv1.Lease)
		holder := ""
		if l.Spec.HolderIdentity != nil {
			holder = *l.Spec.HolderIdentity
		}
		return []interface{}{l.Name, holder, age(obj)}
	},
}

// eventTable always carries the wide columns (Priority 1): kubectl shows them with -o wide.
var eventTable = tableConvertor{
	columns: []metav1.TableColumnDefinition{
		{Name: "Last Seen", Type: "string", Description: eventDoc["lastTimestamp"]},
		{Name: "Type", Type: "string", Description: eventDoc["type"]},
		{Name: "Reason", Type: "string", Description: eventDoc["reason"]},
		{Name: "Object", Type: "string", Description: eventDoc["involvedObject"]},
		{Name: "Subobject", Type: "string", Priority: 1, Description: corev1.ObjectReference{}.SwaggerDoc()["fieldPath"]},
		{Name: "Source", Type: "string", Priority: 1, Description: eventDoc["source"]},
		{Name: "Message", Type: "string", Description: eventDoc["message"]},
		{Name: "First Seen", Type: "string", Priority: 1, Description: eventDoc["firstTimestamp"]},
		{Name: "Count", Type: "string", Priority: 1, Description: eventDoc["count"]},
		{Name: "Name", Type: "string", Priority: 1, Format: "name", Description: metaDoc["name"]},
	},
	cells: func(obj runtime.Object) []interface{} {
		e := obj.(*corev1.Event)
		first := since(e.FirstTimestamp.Time)
		if e.FirstTimestamp.IsZero() {
			first = since(e.EventTime.Time)
		}
		last := since(e.LastTimestamp.Time)
		if e.LastTimestamp.IsZero() {
			last = first
		}
		count := e.Count
		if e.Series != nil {
			last = since(e.Series.LastObservedTime.Time)
			count = e.Series.Count
		} else if count == 0 {
			count = 1 // a singleton event of the events.k8s.io API has no count
		}
		target := strings.ToLower(e.InvolvedObject.Kind)
		if e.InvolvedObject.Name != "" {
			target += "/" + e.InvolvedObject.Name
		}
		return []interface{}{
			last, e.Type, e.Reason, target, e.InvolvedObject.FieldPath,
			eventSource(e), strings.TrimSpace(e.Message), first, int64(count), e.Name,
		}
	},
}

func eventSource(e *corev1.Event) string {
	component, instance := e.Source.Component, e.Source.Host
	if component == "" {
		component = e.ReportingController
	}
	if instance == "" {
		instance = e.ReportingInstance
	}
	if instance == "" {
		return component
	}
	return component + ", " + instance
}

// roleBindingTable serves RoleBindings and ClusterRoleBindings alike.
var roleBindingTable = tableConvertor{
	columns: []metav1.TableColumnDefinition{
		nameCol,
		{Name: "Role", Type: "string", Description: rbacv1.RoleBinding{}.SwaggerDoc()["roleRef"]},
		ageCol,
		{Name: "Users", Type: "string", Priority: 1, Description: "Users in the binding"},
		{Name: "Groups", Type: "string", Priority: 1, Description: "Groups in the binding"},
		{Name: "ServiceAccounts", Type: "string", Priority: 1, Description: "ServiceAccounts in the binding"},
	},
	cells: func(obj runtime.Object) []interface{} {
		var name string
		var ref rbacv1.RoleRef
		var subjects []rbacv1.Subject
		switch b := obj.(type) {
		case *rbacv1.RoleBinding:
			name, ref, subjects = b.Name, b.RoleRef, b.Subjects
		case *rbacv1.ClusterRoleBinding:
			name, ref, subjects = b.Name, b.RoleRef, b.Subjects
		}
		var users, groups, sas []string
		for _, s := range subjects {
			switch s.Kind {
			case rbacv1.UserKind:
				users = append(users, s.Name)
			case rbacv1.GroupKind:
				groups = append(groups, s.Name)
			case rbacv1.ServiceAccountKind:
				if s.Namespace != "" {
					sas = append(sas, s.Namespace+"/"+s.Name)
				} else {
					sas = append(sas, s.Name)
				}
			}
		}
		return []interface{}{
			name, fmt.Sprintf("%s/%s", ref.Kind, ref.Name), age(obj),
			strings.Join(users, ", "), strings.Join(groups, ", "), strings.Join(sas, ", "),
		}
	},
}

// deploymentTable: kubectl get deploy (the wide columns have Priority 1).
var deploymentTable = tableConvertor{
	columns: []metav1.TableColumnDefinition{
		nameCol,
		{Name: "Ready", Type: "string", Description: "Number of the pod with ready state"},
		{Name: "Up-to-date", Type: "string", Description: appsv1.DeploymentStatus{}.SwaggerDoc()["updatedReplicas"]},
		{Name: "Available", Type: "string", Description: appsv1.DeploymentStatus{}.SwaggerDoc()["availableReplicas"]},
		ageCol,
		{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."},
		{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."},
		{Name: "Selector", Type: "string", Priority: 1, Description: appsv1.DeploymentSpec{}.SwaggerDoc()["selector"]},
	},
	cells: func(obj runtime.Object) []interface{} {
		d := obj.(*appsv1.Deployment)
		desired := int32(1)
		if d.Spec.Replicas != nil {
			desired = *d.Spec.Replicas
		}
		var containers, images []string
		for _, c := range d.Spec.Template.Spec.Containers {
			containers = append(containers, c.Name)
			images = append(images, c.Image)
		}
		selector := "<none>"
		if s, err := metav1.LabelSelectorAsSelector(d.Spec.Selector); err == nil && d.Spec.Selector != nil {
			selector = s.String()
		}
		return []interface{}{
			d.Name, fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, desired),
			int64(d.Status.UpdatedReplicas), int64(d.Status.AvailableReplicas), age(obj),
			strings.Join(containers, ","), strings.Join(images, ","), selector,
		}
	},
}

// serviceTable: kubectl get svc. No cluster IP is allocated here, so it reads <none>.
var serviceTable = tableConvertor{
	columns: []metav1.TableColumnDefinition{
		nameCol,
		{Name: "Type", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["type"]},
		{Name: "Cluster-IP", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["clusterIP"]},
		{Name: "External-IP", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["externalIPs"]},
		{Name: "Port(s)", Type: "string", Description: corev1.ServiceSpec{}.SwaggerDoc()["ports"]},
		ageCol,
		{Name: "Selector", Type: "string", Priority: 1, Description: corev1.ServiceSpec{}.SwaggerDoc()["selector"]},
	},
	cells: func(obj runtime.Object) []interface{} {
		svc := obj.(*corev1.Service)
		clusterIP := svc.Spec.ClusterIP
		if clusterIP == "" {
			clusterIP = "<none>"
		}
		external := "<none>"
		if len(svc.Spec.ExternalIPs) > 0 {
			external = strings.Join(svc.Spec.ExternalIPs, ",")
		}
		var ports []string
		for _, p := range svc.Spec.Ports {
			port := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
			if p.NodePort != 0 {
				port = fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol)
			}
			ports = append(ports, port)
		}
		shown := "<none>"
		if len(ports) > 0 {
			shown = strings.Join(ports, ",")
		}
		selector := "<none>"
		if len(svc.Spec.Selector) > 0 {
			selector = labels.SelectorFromSet(svc.Spec.Selector).String()
		}
		return []interface{}{svc.Name, string(svc.Spec.Type), clusterIP, external, shown, age(obj), selector}
	},
}
