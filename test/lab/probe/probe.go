// Package probe measures reachability between lab pods with real
// connections made from inside each source pod's network namespace.
//
// Every lab pod runs a test server on each declared containerPort that
// answers with "namespace/name" (TCP: one line then close; UDP: one
// datagram per datagram). A probe from A to B on a port is allowed when A
// receives B's name within the timeout.
package probe

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"palisade.dev/palisade/test/lab/nsexec"
)

// Protocols the probe speaks. SCTP cannot be opened on the lab's kernel.
const (
	TCP = "TCP"
	UDP = "UDP"
)

// Parallelism bounds concurrent probes.
const Parallelism = 16

// Pod is a lab pod as the probe needs it.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Node      string `json:"node"`
	// IP is the pod's address (empty until the CNI has run).
	IP string `json:"ip"`
	// Netns is the path of the pod's network namespace.
	Netns string `json:"netns"`
}

// Key is "namespace/name", which is also what the pod's servers answer.
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// Cell is the outcome of one probe.
type Cell struct {
	From    string `json:"from"`
	To      string `json:"to"`
	Allowed bool   `json:"allowed"`
	// Error says why a probe was not allowed (timeout, refused, ...).
	Error string `json:"error,omitempty"`
}

// Result is a reachability matrix. Cells are in row-major order of Pods.
type Result struct {
	Port     int      `json:"port"`
	Protocol string   `json:"protocol"`
	Pods     []string `json:"pods"`
	Cells    []Cell   `json:"cells"`
}

// Allowed reports whether from could reach to ("namespace/name" keys).
func (r *Result) Allowed(from, to string) (allowed, found bool) {
	for _, c := range r.Cells {
		if c.From == from && c.To == to {
			return c.Allowed, true
		}
	}
	return false, false
}

// NormalizeProtocol upper-cases proto and checks that the probe supports it.
func NormalizeProtocol(proto string) (string, error) {
	switch p := strings.ToUpper(proto); p {
	case TCP, UDP:
		return p, nil
	default:
		return "", fmt.Errorf("unsupported protocol %q: want TCP or UDP", proto)
	}
}

// Matrix probes every ordered pair of pods (including each pod to itself)
// on port/proto and returns the matrix. An unreachable pair is a blocked
// cell, not an error; errors are for bad input and a cancelled context.
func Matrix(ctx context.Context, pods []Pod, port int, proto string, timeout time.Duration) (*Result, error) {
	proto, err := NormalizeProtocol(proto)
	if err != nil {
		return nil, err
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("invalid port %d", port)
	}
	if timeout <= 0 {
		return nil, fmt.Errorf("invalid timeout %v", timeout)
	}
	res := &Result{Port: port, Protocol: proto, Cells: make([]Cell, len(pods)*len(pods))}
	seen := map[string]bool{}
	for _, p := range pods {
		if seen[p.Key()] {
			return nil, fmt.Errorf("pod %s listed twice", p.Key())
		}
		seen[p.Key()] = true
		res.Pods = append(res.Pods, p.Key())
	}
	sem := make(chan struct{}, Parallelism)
	var wg sync.WaitGroup
	for i, from := range pods {
		for j, to := range pods {
			cell := &res.Cells[i*len(pods)+j]
			cell.From, cell.To = from.Key(), to.Key()
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				if err := One(ctx, from, to, port, proto, timeout); err != nil {
					cell.Error = err.Error()
				} else {
					cell.Allowed = true
				}
			}()
		}
	}
	wg.Wait()
	return res, ctx.Err()
}

// One makes a single connection from inside from's network namespace to
// to's IP and port, and returns nil if to answered with its name.
func One(ctx context.Context, from, to Pod, port int, proto string, timeout time.Duration) error {
	if from.Netns == "" {
		return fmt.Errorf("source %s has no network namespace", from.Key())
	}
	ip, err := netip.ParseAddr(to.IP)
	if err != nil {
		return fmt.Errorf("target %s has no IP", to.Key())
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	network := strings.ToLower(proto)
	addr := net.JoinHostPort(ip.String(), strconv.Itoa(port))
	var conn net.Conn
	// Only the socket needs to be created in the source namespace; the
	// exchange can then run on any thread.
	if err := nsexec.Do(from.Netns, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	}); err != nil {
		return err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	if err := conn.SetDeadline(deadline); err != nil {
		return err
	}
	var reply string
	if proto == UDP {
		if _, err := conn.Write([]byte("probe")); err != nil {
			return err
		}
		buf := make([]byte, 512)
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		reply = string(buf[:n])
	} else {
		line, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil {
			return err
		}
		reply = strings.TrimSuffix(line, "\n")
	}
	if reply != to.Key() {
		return errors.New("unexpected reply " + strconv.Quote(reply) + " (another pod answered)")
	}
	return nil
}
