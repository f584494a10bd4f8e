package ipam

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func mustAddr(s string) netip.Addr     { return netip.MustParseAddr(s) }

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name     string
		cidr     netip.Prefix
		reserved []netip.Addr
		state    string
		wantErr  string
	}{
		{name: "ok", cidr: mustPrefix("198.18.0.0/24"), reserved: []netip.Addr{mustAddr("198.18.0.1")}},
		{name: "invalid", cidr: netip.Prefix{}, wantErr: "not an IPv4 prefix"},
		{name: "ipv6", cidr: mustPrefix("2001:db8::/64"), wantErr: "not an IPv4 prefix"},
		{name: "host bits", cidr: mustPrefix("198.18.0.5/24"), wantErr: "host bits set"},
		{name: "too small", cidr: mustPrefix("198.18.0.0/31"), wantErr: "at least /30"},
		{name: "reserved outside", cidr: mustPrefix("198.18.0.0/24"), reserved: []netip.Addr{mustAddr("198.18.1.1")}, wantErr: "outside pod CIDR"},
		{name: "all reserved", cidr: mustPrefix("198.18.0.0/30"), reserved: []netip.Addr{mustAddr("198.18.0.1"), mustAddr("198.18.0.2")}, wantErr: "no usable address"},
		{name: "corrupt state", cidr: mustPrefix("198.18.0.0/24"), state: "{not json", wantErr: "is corrupt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "ipam.json")
			if tc.state != "" {
				if err := os.WriteFile(file, []byte(tc.state), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := New(tc.cidr, tc.reserved, file)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("New() error = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New() error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
	if _, err := New(mustPrefix("198.18.0.0/24"), nil, ""); err == nil {
		t.Fatal("New() with empty state file path succeeded")
	}
}

// op is one step of an allocation scenario.
type op struct {
	kind    string // allocate, release, mark
	owner   string
	ip      string // mark: the address; allocate: the expected address
	wantErr string
}

func TestScenarios(t *testing.T) {
	gw := mustAddr("198.18.0.1")
	tests := []struct {
		name string
		cidr string
		ops  []op
		want map[string]string
	}{
		{
			name: "skips network, gateway and broadcast, then exhausts",
			cidr: "198.18.0.0/29", // .0 network, .1 gateway, .7 broadcast: .2-.6 usable
			ops: []op{
				{kind: "allocate", owner: "a", ip: "198.18.0.2"},
				{kind: "allocate", owner: "b", ip: "198.18.0.3"},
				{kind: "allocate", owner: "c", ip: "198.18.0.4"},
				{kind: "allocate", owner: "d", ip: "198.18.0.5"},
				{kind: "allocate", owner: "e", ip: "198.18.0.6"},
				{kind: "allocate", owner: "f", wantErr: "no free address left"},
			},
			want: map[string]string{"a": "198.18.0.2", "b": "198.18.0.3", "c": "198.18.0.4", "d": "198.18.0.5", "e": "198.18.0.6"},
		},
		{
			name: "same owner gets the same address",
			cidr: "198.18.0.0/24",
			ops: []op{
				{kind: "allocate", owner: "a", ip: "198.18.0.2"},
				{kind: "allocate", owner: "a", ip: "198.18.0.2"},
			},
			want: map[string]string{"a": "198.18.0.2"},
		},
		{
			name: "released address is not reused at once, wraps around",
			cidr: "198.18.0.0/29",
			ops: []op{
				{kind: "allocate", owner: "a", ip: "198.18.0.2"},
				{kind: "release", owner: "a"},
				{kind: "allocate", owner: "b", ip: "198.18.0.3"},
				{kind: "allocate", owner: "c", ip: "198.18.0.4"},
				{kind: "allocate", owner: "d", ip: "198.18.0.5"},
				{kind: "allocate", owner: "e", ip: "198.18.0.6"},
				{kind: "allocate", owner: "f", ip: "198.18.0.2"},
			},
			want: map[string]string{"b": "198.18.0.3", "c": "198.18.0.4", "d": "198.18.0.5", "e": "198.18.0.6", "f": "198.18.0.2"},
		},
		{
			name: "release of unknown owner is a no-op",
			cidr: "198.18.0.0/24",
			ops:  []op{{kind: "release", owner: "nobody"}},
			want: map[string]string{},
		},
		{
			name: "mark allocated",
			cidr: "198.18.0.0/24",
			ops: []op{
				{kind: "mark", owner: "a", ip: "198.18.0.2"},
				{kind: "allocate", owner: "b", ip: "198.18.0.3"},
				{kind: "mark", owner: "a", ip: "198.18.0.9"}, // moves a
				{kind: "mark", owner: "c", ip: "198.18.0.3", wantErr: `already allocated to "b"`},
				{kind: "mark", owner: "c", ip: "198.18.0.1", wantErr: "reserved"},
				{kind: "mark", owner: "c", ip: "198.18.0.0", wantErr: "reserved"},
				{kind: "mark", owner: "c", ip: "198.18.0.255", wantErr: "reserved"},
				{kind: "mark", owner: "c", ip: "198.18.1.5", wantErr: "outside pod CIDR"},
				{kind: "mark", owner: "", ip: "198.18.0.7", wantErr: "owner is empty"},
				{kind: "allocate", owner: "", wantErr: "owner is empty"},
			},
			want: map[string]string{"a": "198.18.0.9", "b": "198.18.0.3"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "state", "ipam.json")
			a, err := New(mustPrefix(tc.cidr), []netip.Addr{gw}, file)
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range tc.ops {
				var err error
				switch o.kind {
				case "allocate":
					var got netip.Addr
					got, err = a.Allocate(o.owner)
					if err == nil && got.String() != o.ip {
						t.Fatalf("op %d: Allocate(%q) = %s, want %s", i, o.owner, got, o.ip)
					}
				case "release":
					err = a.Release(o.owner)
				case "mark":
					err = a.MarkAllocated(o.owner, mustAddr(o.ip))
				}
				if o.wantErr == "" && err != nil {
					t.Fatalf("op %d (%s %q): unexpected error %v", i, o.kind, o.owner, err)
				}
				if o.wantErr != "" && (err == nil || !strings.Contains(err.Error(), o.wantErr)) {
					t.Fatalf("op %d (%s %q): error = %v, want it to contain %q", i, o.kind, o.owner, err, o.wantErr)
				}
			}
			if diff := cmp.Diff(tc.want, stringify(a.Owners())); diff != "" {
				t.Errorf("Owners() mismatch (-want +got):\n%s", diff)
			}
			// A new allocator on the same state file sees the same allocations.
			b, err := New(mustPrefix(tc.cidr), []netip.Addr{gw}, file)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, stringify(b.Owners())); diff != "" {
				t.Errorf("reloaded Owners() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReserved(t *testing.T) {
	a, err := New(mustPrefix("198.18.0.0/24"), []netip.Addr{mustAddr("198.18.0.1")}, filepath.Join(t.TempDir(), "ipam.json"))
	if err != nil {
		t.Fatal(err)
	}
	for ip, want := range map[string]bool{"198.18.0.0": true, "198.18.0.1": true, "198.18.0.255": true, "198.18.0.2": false, "198.18.1.1": false} {
		if got := a.Reserved(mustAddr(ip)); got != want {
			t.Errorf("Reserved(%s) = %v, want %v", ip, got, want)
		}
	}
}

func TestExhaustedIsErrExhausted(t *testing.T) {
	a, err := New(mustPrefix("198.18.0.0/30"), nil, filepath.Join(t.TempDir(), "ipam.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, owner := range []string{"a", "b"} {
		if _, err := a.Allocate(owner); err != nil {
			t.Fatalf("Allocate(%q): %v", owner, err)
		}
	}
	if _, err := a.Allocate("c"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("Allocate on a full CIDR: error = %v, want ErrExhausted", err)
	}
}

func TestReload(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ipam.json")
	tests := []struct {
		name     string
		state    string
		cidr     string
		reserved []netip.Addr
		want     map[string]string
	}{
		{
			name:  "valid entries kept",
			state: `{"cidr":"198.18.0.0/24","allocations":{"a":"198.18.0.2","b":"198.18.0.77"}}`,
			cidr:  "198.18.0.0/24",
			want:  map[string]string{"a": "198.18.0.2", "b": "198.18.0.77"},
		},
		{
			name:  "other CIDR ignored",
			state: `{"cidr":"198.18.1.0/24","allocations":{"a":"198.18.1.2"}}`,
			cidr:  "198.18.0.0/24",
			want:  map[string]string{},
		},
		{
			name:     "reserved, outside and empty owner dropped",
			state:    `{"cidr":"198.18.0.0/24","allocations":{"a":"198.18.0.1","b":"198.18.0.255","c":"198.18.3.3","":"198.18.0.9","d":"198.18.0.10"}}`,
			cidr:     "198.18.0.0/24",
			reserved: []netip.Addr{mustAddr("198.18.0.1")},
			want:     map[string]string{"d": "198.18.0.10"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(file, []byte(tc.state), 0o600); err != nil {
				t.Fatal(err)
			}
			a, err := New(mustPrefix(tc.cidr), tc.reserved, file)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, stringify(a.Owners())); diff != "" {
				t.Errorf("Owners() mismatch (-want +got):\n%s", diff)
			}
			// Reloaded entries are in use: new owners get other addresses.
			ip, err := a.Allocate("new")
			if err != nil {
				t.Fatal(err)
			}
			for owner, held := range tc.want {
				if ip.String() == held {
					t.Errorf("Allocate(new) = %s, which %q already holds", ip, owner)
				}
			}
		})
	}
}

func TestSaveFailureKeepsMemoryConsistent(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ipam.json")
	a, err := New(mustPrefix("198.18.0.0/24"), nil, file)
	if err != nil {
		t.Fatal(err)
	}
	// A directory where the state file should be makes every save fail.
	if err := os.Mkdir(file, 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Allocate("a"); err == nil {
		t.Fatal("Allocate succeeded although the state file cannot be written")
	}
	if got := a.Owners(); len(got) != 0 {
		t.Fatalf("Owners() after failed Allocate = %v, want none", got)
	}
}

func stringify(m map[string]netip.Addr) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v.String()
	}
	return out
}
