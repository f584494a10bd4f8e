// Package nsexec runs a function with the calling OS thread inside another
// network namespace. Sockets created by the function stay in that namespace
// after the thread returns, so a listener or connection can be created in a
// pod's namespace and used from anywhere in the process.
package nsexec

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on a dedicated OS thread switched into the network namespace
// at path (e.g. /var/run/netns/plab-p0123). fn must not start goroutines
// that expect to be in that namespace: only its own thread is.
func Do(path string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// If restoring the namespace fails the thread stays locked and
		// dies with this goroutine instead of serving others in the wrong
		// namespace.
		restored, err := do(path, fn)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

func do(path string, fn func() error) (restored bool, err error) {
	orig, err := netns.Get()
	if err != nil {
		return true, fmt.Errorf("get current network namespace: %w", err)
	}
	defer orig.Close()
	target, err := netns.GetFromPath(path)
	if err != nil {
		return true, fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return true, fmt.Errorf("enter network namespace %s: %w", path, err)
	}
	fnErr := fn()
	if err := netns.Set(orig); err != nil {
		return false, fmt.Errorf("restore network namespace: %w", err)
	}
	return true, fnErr
}
