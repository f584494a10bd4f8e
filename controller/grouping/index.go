// Package grouping is a pure index of pods by their distinct label sets and
// of group selectors over them. A selector is evaluated once per label set
// (all replicas of a Deployment share one), never per pod, and every change
// reports exactly the selectors it may affect, so that callers update only
// those groups.
//
// The index is not safe for concurrent use; its owner serializes access.
package grouping

import (
	"k8s.io/apimachinery/pkg/labels"
)

// Selector selects pods: those matching PodSelector in Namespace, or, when
// NamespaceSelector is set, in every namespace whose labels match it.
type Selector struct {
	Namespace         string
	NamespaceSelector labels.Selector
	PodSelector       labels.Selector
}

func (s Selector) clusterScoped() bool { return s.NamespaceSelector != nil }

// Index maps pods (each carrying a value V) to the selectors that select
// them.
type Index[V any] struct {
	pods       map[string]*podEntry[V] // by "namespace/name"
	labelSets  map[string]*labelSet[V] // by namespace + "\x00" + labels
	namespaces map[string]*namespaceEntry[V]
	selectors  map[string]*selectorEntry[V]
	// clusterSelectors are the selectors with a NamespaceSelector.
	clusterSelectors map[*selectorEntry[V]]struct{}
}

type podEntry[V any] struct {
	key      string
	value    V
	labelSet *labelSet[V]
}

// labelSet is one distinct label set of one namespace with its pods and the
// selectors that select it.
type labelSet[V any] struct {
	key       string
	namespace *namespaceEntry[V]
	labels    labels.Set
	pods      map[string]*podEntry[V]
	selectors map[*selectorEntry[V]]struct{}
}

type namespaceEntry[V any] struct {
	name   string
	labels labels.Set
	// known says whether the Namespace object exists; entries also exist
	// for namespaces that only pods or selectors refer to.
	known     bool
	labelSets map[*labelSet[V]]struct{}
	// scoped are the namespace-scoped selectors of this namespace.
	scoped map[*selectorEntry[V]]struct{}
	// clusterMatches are the cluster-scoped selectors whose
	// NamespaceSelector matches this namespace's labels.
	clusterMatches map[*selectorEntry[V]]struct{}
}

type selectorEntry[V any] struct {
	key       string
	sel       Selector
	labelSets map[*labelSet[V]]struct{}
}

// NewIndex returns an empty index.
func NewIndex[V any]() *Index[V] {
	return &Index[V]{
		pods:             map[string]*podEntry[V]{},
		labelSets:        map[string]*labelSet[V]{},
		namespaces:       map[string]*namespaceEntry[V]{},
		selectors:        map[string]*selectorEntry[V]{},
		clusterSelectors: map[*selectorEntry[V]]struct{}{},
	}
}

// PodKey is the key of a pod in the index.
func PodKey(namespace, name string) string { return namespace + "/" + name }

// SetPod adds or updates a pod and returns the keys of the selectors that
// selected it before or select it now.
func (x *Index[V]) SetPod(namespace, name string, podLabels map[string]string, value V) []string {
	key := PodKey(namespace, name)
	lsKey := namespace + "\x00" + labels.Set(podLabels).String()
	p, ok := x.pods[key]
	if ok && p.labelSet.key == lsKey {
		p.value = value
		return selectorKeys(p.labelSet.selectors, nil)
	}
	var affected []string
	var before map[*selectorEntry[V]]struct{}
	if ok {
		before = p.labelSet.selectors
		affected = selectorKeys(before, nil)
		x.detachPod(p)
	} else {
		p = &podEntry[V]{key: key}
		x.pods[key] = p
	}
	p.value = value
	ls := x.labelSetFor(lsKey, namespace, podLabels)
	ls.pods[key] = p
	p.labelSet = ls
	for s := range ls.selectors {
		if _, dup := before[s]; !dup {
			affected = append(affected, s.key)
		}
	}
	return affected
}

// DeletePod removes a pod and returns the keys of the selectors that
// selected it.
func (x *Index[V]) DeletePod(namespace, name string) []string {
	key := PodKey(namespace, name)
	p, ok := x.pods[key]
	if !ok {
		return nil
	}
	affected := selectorKeys(p.labelSet.selectors, nil)
	x.detachPod(p)
	delete(x.pods, key)
	return affected
}

// Pod returns the value of a pod.
func (x *Index[V]) Pod(key string) (V, bool) {
	p, ok := x.pods[key]
	if !ok {
		var zero V
		return zero, false
	}
	return p.value, true
}

// Labels returns the labels of a pod.
func (x *Index[V]) Labels(key string) (labels.Set, bool) {
	p, ok := x.pods[key]
	if !ok {
		return nil, false
	}
	return p.labelSet.labels, true
}

// SetNamespace sets a namespace's labels and returns the keys of the
// cluster-scoped selectors that started or stopped selecting it.
func (x *Index[V]) SetNamespace(name string, nsLabels map[string]string) []string {
	ns := x.namespace(name)
	ns.known = true
	return x.relabelNamespace(ns, labels.Set(nsLabels))
}

// DeleteNamespace forgets a namespace's labels (its pods, if any remain,
// are then in a namespace without labels) and returns the keys of the
// selectors that stopped selecting it.
func (x *Index[V]) DeleteNamespace(name string) []string {
	ns, ok := x.namespaces[name]
	if !ok {
		return nil
	}
	ns.known = false
	affected := x.relabelNamespace(ns, nil)
	x.collectNamespace(ns)
	return affected
}

// NamespacePods calls fn for every pod of a namespace.
func (x *Index[V]) NamespacePods(name string, fn func(key string, value V)) {
	ns, ok := x.namespaces[name]
	if !ok {
		return
	}
	for ls := range ns.labelSets {
		for _, p := range ls.pods {
			fn(p.key, p.value)
		}
	}
}

// AddSelector adds a selector under key, evaluating it once per label set
// in its scope. Adding an existing key does nothing.
func (x *Index[V]) AddSelector(key string, sel Selector) {
	if _, ok := x.selectors[key]; ok {
		return
	}
	s := &selectorEntry[V]{key: key, sel: sel, labelSets: map[*labelSet[V]]struct{}{}}
	x.selectors[key] = s
	if !sel.clusterScoped() {
		ns := x.namespace(sel.Namespace)
		ns.scoped[s] = struct{}{}
		x.evaluate(s, ns)
		return
	}
	x.clusterSelectors[s] = struct{}{}
	for _, ns := range x.namespaces {
		if sel.NamespaceSelector.Matches(ns.labels) {
			ns.clusterMatches[s] = struct{}{}
			x.evaluate(s, ns)
		}
	}
}

// DeleteSelector removes the selector under key.
func (x *Index[V]) DeleteSelector(key string) {
	s, ok := x.selectors[key]
	if !ok {
		return
	}
	for ls := range s.labelSets {
		delete(ls.selectors, s)
	}
	delete(x.selectors, key)
	if !s.sel.clusterScoped() {
		ns := x.namespaces[s.sel.Namespace]
		delete(ns.scoped, s)
		x.collectNamespace(ns)
		return
	}
	delete(x.clusterSelectors, s)
	for _, ns := range x.namespaces {
		delete(ns.clusterMatches, s)
	}
}

// Selected calls fn for every pod the selector under key selects.
func (x *Index[V]) Selected(key string, fn func(podKey string, value V)) {
	s, ok := x.selectors[key]
	if !ok {
		return
	}
	for ls := range s.labelSets {
		for _, p := range ls.pods {
			fn(p.key, p.value)
		}
	}
}

// Selects says whether the selector under key selects the pod podKey.
func (x *Index[V]) Selects(key, podKey string) bool {
	s, ok := x.selectors[key]
	if !ok {
		return false
	}
	p, ok := x.pods[podKey]
	if !ok {
		return false
	}
	_, ok = s.labelSets[p.labelSet]
	return ok
}

// Stats counts the index's entries.
type Stats struct {
	Pods, LabelSets, Namespaces, Selectors int
}

// Stats returns the index's size.
func (x *Index[V]) Stats() Stats {
	return Stats{Pods: len(x.pods), LabelSets: len(x.labelSets), Namespaces: len(x.namespaces), Selectors: len(x.selectors)}
}

// namespace returns the namespace's entry, creating it (without labels)
// and matching the cluster-scoped selectors against it.
func (x *Index[V]) namespace(name string) *namespaceEntry[V] {
	if ns, ok := x.namespaces[name]; ok {
		return ns
	}
	ns := &namespaceEntry[V]{
		name:           name,
		labelSets:      map[*labelSet[V]]struct{}{},
		scoped:         map[*selectorEntry[V]]struct{}{},
		clusterMatches: map[*selectorEntry[V]]struct{}{},
	}
	for s := range x.clusterSelectors {
		if s.sel.NamespaceSelector.Matches(ns.labels) {
			ns.clusterMatches[s] = struct{}{}
		}
	}
	x.namespaces[name] = ns
	return ns
}

// collectNamespace drops the entry of a namespace nothing refers to.
func (x *Index[V]) collectNamespace(ns *namespaceEntry[V]) {
	if !ns.known && len(ns.labelSets) == 0 && len(ns.scoped) == 0 {
		delete(x.namespaces, ns.name)
	}
}

// relabelNamespace sets ns's labels and re-evaluates the cluster-scoped
// selectors whose match of ns changed.
func (x *Index[V]) relabelNamespace(ns *namespaceEntry[V], nsLabels labels.Set) []string {
	ns.labels = nsLabels
	var affected []string
	for s := range x.clusterSelectors {
		_, was := ns.clusterMatches[s]
		is := s.sel.NamespaceSelector.Matches(nsLabels)
		switch {
		case is && !was:
			ns.clusterMatches[s] = struct{}{}
			x.evaluate(s, ns)
		case was && !is:
			delete(ns.clusterMatches, s)
			for ls := range ns.labelSets {
				delete(ls.selectors, s)
				delete(s.labelSets, ls)
			}
		default:
			continue
		}
		affected = append(affected, s.key)
	}
	return affected
}

// evaluate matches s against every label set of ns (which is in s's scope).
func (x *Index[V]) evaluate(s *selectorEntry[V], ns *namespaceEntry[V]) {
	for ls := range ns.labelSets {
		if s.sel.PodSelector.Matches(ls.labels) {
			ls.selectors[s] = struct{}{}
			s.labelSets[ls] = struct{}{}
		}
	}
}

// labelSetFor returns the label set under lsKey, creating it and
// evaluating the selectors of its scope.
func (x *Index[V]) labelSetFor(lsKey, namespace string, podLabels map[string]string) *labelSet[V] {
	if ls, ok := x.labelSets[lsKey]; ok {
		return ls
	}
	ns := x.namespace(namespace)
	ls := &labelSet[V]{
		key:       lsKey,
		namespace: ns,
		labels:    labels.Set(podLabels),
		pods:      map[string]*podEntry[V]{},
		selectors: map[*selectorEntry[V]]struct{}{},
	}
	x.labelSets[lsKey] = ls
	ns.labelSets[ls] = struct{}{}
	for _, candidates := range []map[*selectorEntry[V]]struct{}{ns.scoped, ns.clusterMatches} {
		for s := range candidates {
			if s.sel.PodSelector.Matches(ls.labels) {
				ls.selectors[s] = struct{}{}
				s.labelSets[ls] = struct{}{}
			}
		}
	}
	return ls
}

// detachPod removes p from its label set, dropping the set if it empties.
func (x *Index[V]) detachPod(p *podEntry[V]) {
	ls := p.labelSet
	delete(ls.pods, p.key)
	p.labelSet = nil
	if len(ls.pods) > 0 {
		return
	}
	for s := range ls.selectors {
		delete(s.labelSets, ls)
	}
	delete(x.labelSets, ls.key)
	delete(ls.namespace.labelSets, ls)
	x.collectNamespace(ls.namespace)
}

// selectorKeys appends the keys of set to out.
func selectorKeys[V any](set map[*selectorEntry[V]]struct{}, out []string) []string {
	for s := range set {
		out = append(out, s.key)
	}
	return out
}
