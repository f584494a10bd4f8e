package grouping

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/labels"
)

func mustParse(t *testing.T, s string) labels.Selector {
	t.Helper()
	sel, err := labels.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func selected(x *Index[int], key string) []string {
	var out []string
	x.Selected(key, func(podKey string, _ int) { out = append(out, podKey) })
	slices.Sort(out)
	return out
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}

func TestIndex(t *testing.T) {
	x := NewIndex[int]()
	x.SetNamespace("a", map[string]string{"team": "x"})
	// Three replicas share one label set.
	for i, name := range []string{"web-1", "web-2", "web-3"} {
		x.SetPod("a", name, map[string]string{"app": "web"}, i)
	}
	x.SetPod("a", "db", map[string]string{"app": "db"}, 9)
	x.SetPod("b", "web", map[string]string{"app": "web"}, 10)
	if got := x.Stats(); got.LabelSets != 3 || got.Pods != 5 {
		t.Errorf("Stats() = %+v, want 5 pods in 3 label sets", got)
	}

	x.AddSelector("web-in-a", Selector{Namespace: "a", PodSelector: mustParse(t, "app=web")})
	x.AddSelector("all-in-team-x", Selector{NamespaceSelector: mustParse(t, "team=x"), PodSelector: labels.Everything()})
	x.AddSelector("web-anywhere", Selector{NamespaceSelector: labels.Everything(), PodSelector: mustParse(t, "app=web")})
	want := map[string][]string{
		"web-in-a":      {"a/web-1", "a/web-2", "a/web-3"},
		"all-in-team-x": {"a/db", "a/web-1", "a/web-2", "a/web-3"},
		"web-anywhere":  {"a/web-1", "a/web-2", "a/web-3", "b/web"},
	}
	for key, w := range want {
		if diff := cmp.Diff(w, selected(x, key)); diff != "" {
			t.Errorf("Selected(%s) (-want +got):\n%s", key, diff)
		}
	}
	if !x.Selects("web-in-a", "a/web-2") || x.Selects("web-in-a", "a/db") || x.Selects("nope", "a/db") {
		t.Errorf("Selects disagrees with Selected")
	}

	steps := []struct {
		name string
		do   func() []string
		want []string
	}{
		{"value change keeps the label set: its selectors", func() []string {
			return x.SetPod("a", "web-1", map[string]string{"app": "web"}, 100)
		}, []string{"all-in-team-x", "web-anywhere", "web-in-a"}},
		{"label change: old and new selectors, once each", func() []string {
			return x.SetPod("a", "web-1", map[string]string{"app": "db"}, 100)
		}, []string{"all-in-team-x", "web-anywhere", "web-in-a"}},
		{"new pod in a new namespace", func() []string {
			return x.SetPod("c", "web", map[string]string{"app": "web"}, 11)
		}, []string{"web-anywhere"}},
		{"namespace relabel: only selectors whose match changed", func() []string {
			return x.SetNamespace("b", map[string]string{"team": "x"})
		}, []string{"all-in-team-x"}},
		{"namespace relabel that changes no match", func() []string {
			return x.SetNamespace("b", map[string]string{"team": "x", "other": "1"})
		}, nil},
		{"namespace deletion", func() []string { return x.DeleteNamespace("b") }, []string{"all-in-team-x"}},
		{"pod deletion", func() []string { return x.DeletePod("b", "web") }, []string{"web-anywhere"}},
		{"deleting an unknown pod", func() []string { return x.DeletePod("b", "web") }, nil},
	}
	for _, s := range steps {
		if diff := cmp.Diff(s.want, sorted(s.do()), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: affected selectors (-want +got):\n%s", s.name, diff)
		}
	}
	want = map[string][]string{
		"web-in-a":      {"a/web-2", "a/web-3"},
		"all-in-team-x": {"a/db", "a/web-1", "a/web-2", "a/web-3"},
		"web-anywhere":  {"a/web-2", "a/web-3", "c/web"},
	}
	for key, w := range want {
		if diff := cmp.Diff(w, selected(x, key)); diff != "" {
			t.Errorf("after the steps, Selected(%s) (-want +got):\n%s", key, diff)
		}
	}
	if v, ok := x.Pod("a/web-1"); !ok || v != 100 {
		t.Errorf("Pod(a/web-1) = %d, %v; want 100, true", v, ok)
	}
	var inA []string
	x.NamespacePods("a", func(k string, _ int) { inA = append(inA, k) })
	if diff := cmp.Diff([]string{"a/db", "a/web-1", "a/web-2", "a/web-3"}, sorted(inA)); diff != "" {
		t.Errorf("NamespacePods(a) (-want +got):\n%s", diff)
	}

	// Removing everything leaves an empty index (only the known namespace).
	for _, key := range []string{"web-in-a", "all-in-team-x", "web-anywhere"} {
		x.DeleteSelector(key)
	}
	for _, p := range [][2]string{{"a", "web-1"}, {"a", "web-2"}, {"a", "web-3"}, {"a", "db"}, {"c", "web"}} {
		x.DeletePod(p[0], p[1])
	}
	if got := x.Stats(); got != (Stats{Namespaces: 1}) {
		t.Errorf("after deleting everything: %+v, want only namespace a", got)
	}
}
