// Package ipam hands out the pod IPv4 addresses of one node's pod CIDR. Each
// address has an owner (the pod's container ID); allocations are written to a
// state file after every change so they survive agent restarts.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
)

// ErrExhausted is returned (wrapped) by Allocate when every usable address of
// the CIDR is in use.
var ErrExhausted = errors.New("no free address left")

// Allocator allocates addresses of one IPv4 CIDR. It never hands out the
// network address, the broadcast address or any reserved address. It is safe
// for concurrent use.
type Allocator struct {
	cidr      netip.Prefix
	reserved  map[netip.Addr]bool
	stateFile string
	capacity  int

	mu      sync.Mutex
	byOwner map[string]netip.Addr
	byAddr  map[netip.Addr]string
	// next is where the search for a free address starts, so a released
	// address is not handed out again right away.
	next netip.Addr
}

// state is the on-disk format of the allocations.
type state struct {
	CIDR        netip.Prefix          `json:"cidr"`
	Allocations map[string]netip.Addr `json:"allocations"`
}

// New returns an allocator for cidr (IPv4, at most /30) that never hands out
// the reserved addresses, which must lie inside cidr. If stateFile exists,
// its allocations are loaded; a state file written for another CIDR is
// ignored, because none of its addresses can be valid any more.
func New(cidr netip.Prefix, reserved []netip.Addr, stateFile string) (*Allocator, error) {
	if !cidr.IsValid() || !cidr.Addr().Is4() {
		return nil, fmt.Errorf("ipam: pod CIDR %q is not an IPv4 prefix (only IPv4 is supported)", cidr)
	}
	if cidr.Masked() != cidr {
		return nil, fmt.Errorf("ipam: pod CIDR %s has host bits set (did you mean %s?)", cidr, cidr.Masked())
	}
	if cidr.Bits() > 30 {
		return nil, fmt.Errorf("ipam: pod CIDR %s is too small: it needs at least /30", cidr)
	}
	if stateFile == "" {
		return nil, errors.New("ipam: state file path is empty")
	}
	a := &Allocator{
		cidr:      cidr,
		reserved:  map[netip.Addr]bool{cidr.Addr(): true, lastAddr(cidr): true},
		stateFile: stateFile,
		byOwner:   map[string]netip.Addr{},
		byAddr:    map[netip.Addr]string{},
		next:      cidr.Addr().Next(),
	}
	for _, r := range reserved {
		if !cidr.Contains(r) {
			return nil, fmt.Errorf("ipam: reserved address %s is outside pod CIDR %s", r, cidr)
		}
		a.reserved[r] = true
	}
	a.capacity = 1<<(32-cidr.Bits()) - len(a.reserved)
	if a.capacity <= 0 {
		return nil, fmt.Errorf("ipam: pod CIDR %s has no usable address left after reservations", cidr)
	}
	if err := a.load(); err != nil {
		return nil, err
	}
	return a, nil
}

// CIDR returns the prefix addresses are allocated from.
func (a *Allocator) CIDR() netip.Prefix { return a.cidr }

// Reserved reports whether ip is never handed out: the network and
// broadcast addresses and the reserved addresses given to New.
func (a *Allocator) Reserved(ip netip.Addr) bool { return a.reserved[ip] }

// Allocate returns an address for owner. An owner that already holds an
// address gets the same address again.
func (a *Allocator) Allocate(owner string) (netip.Addr, error) {
	if owner == "" {
		return netip.Addr{}, errors.New("ipam: owner is empty")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if ip, ok := a.byOwner[owner]; ok {
		return ip, nil
	}
	if len(a.byAddr) >= a.capacity {
		return netip.Addr{}, fmt.Errorf("ipam: pod CIDR %s: %w (%d addresses in use)", a.cidr, ErrExhausted, len(a.byAddr))
	}
	ip := a.next
	for a.reserved[ip] || a.byAddr[ip] != "" || !a.cidr.Contains(ip) {
		ip = ip.Next()
		if !a.cidr.Contains(ip) {
			ip = a.cidr.Addr()
		}
	}
	a.set(owner, ip)
	if err := a.save(); err != nil {
		a.unset(owner)
		return netip.Addr{}, err
	}
	a.next = ip.Next()
	return ip, nil
}

// Release frees owner's address. Releasing an owner without an address is a
// no-op.
func (a *Allocator) Release(owner string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ip, ok := a.byOwner[owner]
	if !ok {
		return nil
	}
	a.unset(owner)
	if err := a.save(); err != nil {
		a.set(owner, ip)
		return err
	}
	return nil
}

// MarkAllocated records that owner holds ip, e.g. when rebuilding state from
// the interfaces found at startup. An address owner held before is replaced.
// It fails if ip is not usable or belongs to another owner.
func (a *Allocator) MarkAllocated(owner string, ip netip.Addr) error {
	if owner == "" {
		return errors.New("ipam: owner is empty")
	}
	if !a.cidr.Contains(ip) {
		return fmt.Errorf("ipam: address %s is outside pod CIDR %s", ip, a.cidr)
	}
	if a.reserved[ip] {
		return fmt.Errorf("ipam: address %s is reserved in pod CIDR %s", ip, a.cidr)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if other := a.byAddr[ip]; other != "" && other != owner {
		return fmt.Errorf("ipam: address %s is already allocated to %q", ip, other)
	}
	old, hadOld := a.byOwner[owner]
	if hadOld && old == ip {
		return nil
	}
	a.unset(owner)
	a.set(owner, ip)
	if err := a.save(); err != nil {
		a.unset(owner)
		if hadOld {
			a.set(owner, old)
		}
		return err
	}
	return nil
}

// Owners returns a copy of the current allocations.
func (a *Allocator) Owners() map[string]netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.byOwner)
}

func (a *Allocator) set(owner string, ip netip.Addr) {
	a.byOwner[owner] = ip
	a.byAddr[ip] = owner
}

func (a *Allocator) unset(owner string) {
	if ip, ok := a.byOwner[owner]; ok {
		delete(a.byAddr, ip)
		delete(a.byOwner, owner)
	}
}

// load reads the state file if there is one. Entries that are not valid for
// this allocator's CIDR and reservations are dropped.
func (a *Allocator) load() error {
	data, err := os.ReadFile(a.stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ipam: reading state file: %w", err)
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("ipam: state file %s is corrupt: %w", a.stateFile, err)
	}
	if st.CIDR != a.cidr {
		return nil
	}
	for owner, ip := range st.Allocations {
		if owner == "" || !a.cidr.Contains(ip) || a.reserved[ip] || a.byAddr[ip] != "" {
			continue
		}
		a.set(owner, ip)
	}
	return nil
}

// save writes the state file atomically (temporary file, fsync, rename).
func (a *Allocator) save() error {
	data, err := json.Marshal(state{CIDR: a.cidr, Allocations: a.byOwner})
	if err != nil {
		return fmt.Errorf("ipam: encoding state: %w", err)
	}
	dir := filepath.Dir(a.stateFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ipam: creating state directory: %w", err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(a.stateFile)+".tmp*")
	if err != nil {
		return fmt.Errorf("ipam: writing state file: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(data)
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, a.stateFile)
	}
	if werr != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("ipam: writing state file %s: %w", a.stateFile, werr)
	}
	return nil
}

// lastAddr returns the last (broadcast) address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
