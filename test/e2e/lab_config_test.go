//go:build e2e

package e2e

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"palisade.dev/palisade/test/lab"
	"palisade.dev/palisade/test/lab/layout"
	"palisade.dev/palisade/test/lab/proc"
)

// TestLabShippedConfig checks that the lab runs palisade-controller and
// palisade-agent as the manifest's ServiceAccounts, refused nothing by its
// RBAC, and with the configuration files the manifest ships
// (build/yamls/conf): each runs with --config naming a file identical to
// the shipped one, and a key of that file the lab does not override on the
// command line is in force (the agent serves its API where the file says,
// and moves when the file changes).
func TestLabShippedConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l := startLab(t, ctx, 1)
	agentName := layout.NodeName(1) + "-agent"
	for _, c := range []struct{ process, conf string }{
		{"palisade-controller", "palisade-controller.conf"},
		{agentName, "palisade-agent.conf"},
	} {
		argv := processArgs(t, l, c.process)
		i := slices.Index(argv, "--config")
		if i < 0 || i+1 >= len(argv) {
			t.Fatalf("%s runs without --config: %q", c.process, argv)
		}
		if want := lab.ConfFile(l.Dir(), c.conf); argv[i+1] != want {
			t.Errorf("%s runs with --config %s, want %s", c.process, argv[i+1], want)
		}
		got, err := os.ReadFile(argv[i+1])
		if err != nil {
			t.Fatal(err)
		}
		shipped, err := os.ReadFile(filepath.Join("..", "..", "build", "yamls", "conf", c.conf))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(shipped) {
			t.Errorf("%s runs with %s, which differs from build/yamls/conf/%s:\n%s", c.process, argv[i+1], c.conf, got)
		}
		t.Logf("%s: %s", c.process, strings.Join(argv, " "))
	}

	// api-bind-address comes from the file only.
	netns := layout.NodeNetns(1)
	healthy := func(addr string) bool {
		code, _, err := agentGetAt(ctx, netns, addr, "/healthz")
		return err == nil && code == http.StatusOK
	}
	if !healthy(agentAPI) {
		t.Fatalf("the agent does not serve /healthz on %s, the shipped api-bind-address", agentAPI)
	}
	const moved = "127.0.0.1:10360"
	conf := lab.ConfFile(l.Dir(), "palisade-agent.conf")
	data, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	lines := slices.DeleteFunc(strings.Split(strings.TrimSpace(string(data)), "\n"), func(s string) bool {
		return strings.HasPrefix(s, "api-bind-address:")
	})
	lines = append(lines, "api-bind-address: "+moved)
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.RestartAgent(ctx, 1); err != nil {
		t.Fatalf("restarting the agent: %v", err)
	}
	for deadline := time.Now().Add(30 * time.Second); !healthy(moved); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after api-bind-address: %s in %s and an agent restart, the agent does not serve /healthz there", moved, conf)
		}
	}
	if healthy(agentAPI) {
		t.Errorf("the agent still serves %s after its configuration file moved its API to %s", agentAPI, moved)
	}
	t.Logf("the agent serves its API where %s says: %s, then %s", conf, agentAPI, moved)

	checkRunsAsServiceAccounts(t, ctx, l, map[string]string{
		"palisade-controller": "system:serviceaccount:palisade-system:palisade-controller",
		agentName:             "system:serviceaccount:palisade-system:palisade-agent",
	})
}

// checkRunsAsServiceAccounts checks that each lab process talks to the
// apiserver as the manifest's ServiceAccount (its --kubeconfig's token, as
// TokenReview sees it), and that none of them was refused anything by RBAC
// (no "forbidden" in their logs): the lab exercises the shipped RBAC.
func checkRunsAsServiceAccounts(t *testing.T, ctx context.Context, l *lab.Lab, users map[string]string) {
	t.Helper()
	kube := l.Client()
	for process, want := range users {
		argv := processArgs(t, l, process)
		i := slices.Index(argv, "--kubeconfig")
		if i < 0 || i+1 >= len(argv) {
			t.Fatalf("%s runs without --kubeconfig: %q", process, argv)
		}
		cfg, err := clientcmd.LoadFromFile(argv[i+1])
		if err != nil {
			t.Fatal(err)
		}
		var token string
		for _, a := range cfg.AuthInfos {
			token = a.Token
		}
		tr, err := kube.AuthenticationV1().TokenReviews().Create(ctx,
			&authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !tr.Status.Authenticated || tr.Status.User.Username != want {
			t.Errorf("%s talks to the apiserver as %q (authenticated %v), want %s", process, tr.Status.User.Username, tr.Status.Authenticated, want)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(l.Dir(), "logs", "palisade-controller.log"))
	agents, _ := filepath.Glob(filepath.Join(l.Dir(), "nodes", "*", "logs", "agent.log"))
	for _, f := range append(logs, agents...) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, "forbidden") {
				t.Errorf("RBAC refused a component something (%s): %s", f, line)
			}
		}
	}
}

// processArgs is the command line of the lab process recorded as name.
func processArgs(t *testing.T, l *lab.Lab, name string) []string {
	t.Helper()
	procs, err := proc.Read(layout.Dir(l.Dir()).Pids())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(procs, func(p *proc.Process) bool { return p.Name == name })
	if i < 0 || !procs[i].Alive() {
		t.Fatalf("%s is not running", name)
	}
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(procs[i].Pid), "cmdline"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}
