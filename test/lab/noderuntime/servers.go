package noderuntime

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"

	"palisade.dev/palisade/test/lab/nsexec"
)

// servedPort is one port a pod's test server listens on.
type servedPort struct {
	Port     int32
	Protocol corev1.Protocol
}

// podPorts returns the pod's distinct TCP and UDP container ports, and the
// ones it cannot serve (SCTP: the lab's kernel has none).
func podPorts(pod *corev1.Pod) (serve, skipped []servedPort) {
	seen := map[servedPort]bool{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			sp := servedPort{Port: p.ContainerPort, Protocol: p.Protocol}
			if sp.Protocol == "" {
				sp.Protocol = corev1.ProtocolTCP
			}
			if seen[sp] {
				continue
			}
			seen[sp] = true
			if sp.Protocol == corev1.ProtocolTCP || sp.Protocol == corev1.ProtocolUDP {
				serve = append(serve, sp)
			} else {
				skipped = append(skipped, sp)
			}
		}
	}
	return serve, skipped
}

// testServers are one pod's listeners.
type testServers struct {
	closers []io.Closer
}

// startServers opens every port inside the pod's network namespace and
// answers with reply ("namespace/name"): TCP writes one line and closes,
// UDP answers each datagram.
func startServers(netnsPath string, ports []servedPort, reply string) (*testServers, error) {
	s := &testServers{}
	var tcp []net.Listener
	var udp []net.PacketConn
	err := nsexec.Do(netnsPath, func() error {
		for _, p := range ports {
			addr := ":" + strconv.Itoa(int(p.Port))
			if p.Protocol == corev1.ProtocolUDP {
				pc, err := net.ListenPacket("udp4", addr)
				if err != nil {
					return fmt.Errorf("listen udp %s: %w", addr, err)
				}
				udp = append(udp, pc)
				s.closers = append(s.closers, pc)
				continue
			}
			l, err := net.Listen("tcp4", addr)
			if err != nil {
				return fmt.Errorf("listen tcp %s: %w", addr, err)
			}
			tcp = append(tcp, l)
			s.closers = append(s.closers, l)
		}
		return nil
	})
	if err != nil {
		s.stop()
		return nil, err
	}
	line := []byte(reply + "\n")
	for _, l := range tcp {
		go serveTCP(l, line)
	}
	for _, pc := range udp {
		go serveUDP(pc, []byte(reply))
	}
	return s, nil
}

func serveTCP(l net.Listener, line []byte) {
	for {
		c, err := l.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil { // e.g. out of file descriptors: back off
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go func() {
			_, _ = c.Write(line)
			_ = c.Close()
		}()
	}
}

func serveUDP(pc net.PacketConn, reply []byte) {
	buf := make([]byte, 2048)
	for {
		_, from, err := pc.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		_, _ = pc.WriteTo(reply, from)
	}
}

// stop closes every listener; serving goroutines then return.
func (s *testServers) stop() {
	for _, c := range s.closers {
		_ = c.Close()
	}
}
