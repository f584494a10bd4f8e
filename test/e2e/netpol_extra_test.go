//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"

	"palisade.dev/palisade/test/e2e/netpol"
	"palisade.dev/palisade/test/lab/probe"
)

// First-packet check: how long new pods are probed from the moment their
// address exists, how often, and how long each probe waits.
const (
	npFirstPacketWindow   = 3 * time.Second
	npFirstPacketInterval = 20 * time.Millisecond
	npFirstPacketTimeout  = 300 * time.Millisecond
)

// npExtraCases are scenarios the upstream suite does not have.
func npExtraCases() []netpolCase {
	return []netpolCase{
		{"EndPortTCP", func(c *npCtx) { npEndPort(c, npTCP) }},
		{"EndPortUDP", func(c *npCtx) { npEndPort(c, npUDP) }},
		{"NamedPortDifferentNumbers", npNamedPortDifferentNumbers},
		{"PodCreatedAfterPolicy", npPodCreatedAfterPolicy},
		{"NamespaceCreatedAfterPolicy", npNamespaceCreatedAfterPolicy},
		{"PolicySelectsNothing", npPolicySelectsNothing},
	}
}

// npEndPort: a port range admits exactly its ports, at both ends.
func npEndPort(c *npCtx, proto string) {
	p := corev1.Protocol(proto)
	c.create(npPolicy("x", "allow-range", npLabels("pod", "a"), npIngress(npFrom(nil, npPortRange(p, 81, 90)))))
	r80 := c.reach()
	r80.ExpectAllIngress("x/a", false)
	c.validate(80, proto, r80)
	c.validate(81, proto, c.reach())
	c.update(npPolicy("x", "allow-range", npLabels("pod", "a"), npIngress(npFrom(nil, npPortRange(p, 79, 80)))))
	c.validate(80, proto, c.reach())
	r81 := c.reach()
	r81.ExpectAllIngress("x/a", false)
	c.validate(81, proto, r81)
}

// npNamedPortDifferentNumbers: the port name "web" is 80 on x/n1 and 81 on
// x/n2, so a rule on "web" admits a different number on each pod, for
// ingress (resolved on the selected pods) and egress (resolved on the
// destination peers).
func npNamedPortDifferentNumbers(c *npCtx) {
	webOn := func(web, other int32) []corev1.ContainerPort {
		return []corev1.ContainerPort{
			{Name: "web", ContainerPort: web, Protocol: corev1.ProtocolTCP},
			{Name: "other", ContainerPort: other, Protocol: corev1.ProtocolTCP},
		}
	}
	c.addPod("x", "n1", map[string]string{"pod": "n1", "role": "web"}, webOn(80, 81))
	c.addPod("x", "n2", map[string]string{"pod": "n2", "role": "web"}, webOn(81, 80))
	c.validate(80, npTCP, c.reach())

	c.create(npPolicy("x", "allow-web", npLabels("role", "web"), npIngress(npFrom(nil, npNamedPort("web")))))
	r80 := c.reach()
	r80.ExpectAllIngress("x/n2", false)
	c.validate(80, npTCP, r80)
	r81 := c.reach()
	r81.ExpectAllIngress("x/n1", false)
	c.validate(81, npTCP, r81)

	c.create(npPolicy("y", "egress-to-web", npLabels("pod", "a"),
		npEgress(npTo(npPeers(npPodNs(npLabels("role", "web"), npLabels(npNamespaceLabel, "x"))), npNamedPort("web", npProtoTCP)))))
	r80.ExpectAllEgress("y/a", false)
	r80.Expect("y/a", "x/n1", true)
	c.validate(80, npTCP, r80)
	r81.ExpectAllEgress("y/a", false)
	r81.Expect("y/a", "x/n2", true)
	c.validate(81, npTCP, r81)
}

// npPodCreatedAfterPolicy: a pod selected by an existing policy is isolated
// from its first packet. From the moment its address exists (its CNI ADD
// returned; it is not Running yet and its servers may not listen), it is
// probed continuously in both directions: no packet may get through, and a
// refused connection counts as one that did.
func npPodCreatedAfterPolicy(c *npCtx) {
	c.create(npPolicy("x", "isolate-new", npLabels("new", "true"), npIngress(), npEgress()))
	c.validate(80, npTCP, c.reach())

	c.startPod("x", "d", map[string]string{"pod": "d", "new": "true"}, npServedPorts())
	d := c.waitAddress("x/d")
	peers := []probe.Pod{c.labPod("y/a"), c.labPod("z/b"), c.labPod("x/b")}
	probes, reached := npHammer(c.ctx(), d, peers)
	if len(reached) > 0 {
		c.Fatalf("x/d is selected by a policy that existed before it, but %d of %d probes in the first %s after its address appeared got through:\n%s",
			len(reached), probes, npFirstPacketWindow, strings.Join(reached, "\n"))
	}
	c.Logf("x/d isolated from its first packet: none of %d probes to and from it in the first %s after its address appeared got through", probes, npFirstPacketWindow)
	c.s.waitPods(c.T, []string{"x/d"})
	r := c.reach()
	r.ExpectAllIngress("x/d", false)
	r.ExpectAllEgress("x/d", false)
	c.validate(80, npTCP, r)
	c.validate(80, npUDP, r)
}

// waitAddress polls the lab's pod records until key has an address.
func (c *npCtx) waitAddress(key string) probe.Pod {
	c.Helper()
	deadline := time.Now().Add(npPodReadyLimit)
	for {
		pods, err := c.s.lab.Pods()
		if err != nil {
			c.Fatal(err)
		}
		for _, p := range pods {
			if p.Key() == key && p.IP != "" {
				return p
			}
		}
		if time.Now().After(deadline) {
			c.Fatalf("%s has no address after %s", key, npPodReadyLimit)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// npHammer probes from each peer to pod (TCP and UDP 80) and from pod to
// each peer (TCP 80) every npFirstPacketInterval for npFirstPacketWindow.
// It returns how many probes ran and those that reached their target.
func npHammer(ctx context.Context, pod probe.Pod, peers []probe.Pod) (int, []string) {
	start := time.Now()
	var mu sync.Mutex
	var wg sync.WaitGroup
	probes := 0
	var reached []string
	one := func(from, to probe.Pod, proto string) {
		defer wg.Done()
		t := time.Since(start)
		err := probe.One(ctx, from, to, 80, proto, npFirstPacketTimeout)
		mu.Lock()
		defer mu.Unlock()
		probes++
		// A refusal (TCP reset, ICMP port unreachable) came from the
		// target: the packet got through.
		if err == nil || errors.Is(err, syscall.ECONNREFUSED) {
			reached = append(reached, fmt.Sprintf("  %s/80 %s -> %s at +%s: %v", proto, from.Key(), to.Key(), t.Round(time.Millisecond), err))
		}
	}
	tick := time.NewTicker(npFirstPacketInterval)
	defer tick.Stop()
	for time.Since(start) < npFirstPacketWindow && ctx.Err() == nil {
		for _, peer := range peers {
			wg.Add(3)
			go one(peer, pod, netpol.TCP)
			go one(peer, pod, netpol.UDP)
			go one(pod, peer, netpol.TCP)
		}
		<-tick.C
	}
	wg.Wait()
	return probes, reached
}

// npNamespaceCreatedAfterPolicy: a namespace created after a policy whose
// namespaceSelector matches it is admitted with its pods.
func npNamespaceCreatedAfterPolicy(c *npCtx) {
	c.create(npPolicy("x", "allow-team-late", npLabels("pod", "a"), npIngress(npFrom(npPeers(npNs(npLabels("team", "late")))))))
	r := c.reach()
	r.ExpectAllIngress("x/a", false)
	c.validate(80, npTCP, r)
	c.createNamespace("late", map[string]string{"team": "late"})
	c.addPod("late", "a", map[string]string{"pod": "a"}, npServedPorts())
	r = c.reach()
	r.ExpectAllIngress("x/a", false)
	r.Expect("late/a", "x/a", true)
	c.validate(80, npTCP, r)
}

// npPolicySelectsNothing: a policy whose podSelector matches no pod
// isolates nothing; a rule whose peer matches no pod admits nothing.
func npPolicySelectsNothing(c *npCtx) {
	c.create(npPolicy("x", "selects-nothing", npLabels("pod", "nobody"), npIngress(), npEgress()))
	c.validate(80, npTCP, c.reach())
	c.validate(80, npUDP, c.reach())
	c.create(npPolicy("x", "a-from-nobody", npLabels("pod", "a"), npIngress(npFrom(npPeers(npPod(npLabels("pod", "nobody")))))))
	r := c.reach()
	r.ExpectAllIngress("x/a", false)
	c.validate(80, npTCP, r)
}
