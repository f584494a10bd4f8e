package networkpolicy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"k8s.io/klog/v2"

	"palisade.dev/palisade/controller/apis/controlplane"
)

// StateFileName is the file in the state directory that holds the last state.
const StateFileName = "networkpolicy-state.json"

// Cache holds the node's span as the controller last sent it. It implements
// Handler. A stream's initial list is collected aside and replaces the state
// in one step at its BOOKMARK, so readers never see half a list. The cache
// keeps the resume token of its state (and persists it with the state), so
// a reconnecting or restarted agent gets only the events it missed.
type Cache struct {
	logger    klog.Logger
	stateFile string // empty: no persistence
	onChange  func()

	mu      sync.Mutex
	state   *controlplane.NodeState
	listing *controlplane.NodeState // the list being received; nil outside a list
	synced  bool
	// The store incarnation and RV that state is at; no incarnation: no
	// token (the next stream lists).
	incarnation string
	rv          uint64

	persistMu sync.Mutex
}

var _ Handler = &Cache{}

// NewCache returns a cache that persists its state in stateDir (none if
// empty) and calls onChange (if not nil) after every change it applies. It
// starts with the state persisted by a previous run, if any; an unreadable
// state file is logged and ignored (the controller's list will replace it).
func NewCache(ctx context.Context, stateDir string, onChange func()) (*Cache, error) {
	c := &Cache{logger: klog.FromContext(ctx), onChange: onChange, state: controlplane.NewNodeState()}
	if stateDir == "" {
		return c, nil
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the state directory: %w", err)
	}
	c.stateFile = filepath.Join(stateDir, StateFileName)
	state, token, err := loadState(c.stateFile)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		c.logger.Error(err, "Ignoring the persisted NetworkPolicy state", "file", c.stateFile)
	default:
		c.state = state
		if token != "" {
			if inc, rv, err := controlplane.ParseResumeToken(token); err == nil {
				c.incarnation, c.rv = inc, rv
			}
		}
		c.logger.Info("Loaded the persisted NetworkPolicy state", "file", c.stateFile, "policies", len(state.Policies), "resumeToken", token)
	}
	return c, nil
}

// persistedState is the state file: the NodeState's fields and the resume
// token of that state.
type persistedState struct {
	*controlplane.NodeState
	ResumeToken string `json:"resumeToken,omitempty"`
}

func loadState(file string) (*controlplane.NodeState, string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, "", err
	}
	var s persistedState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, "", fmt.Errorf("parsing %s: %w", file, err)
	}
	if s.NodeState == nil {
		s.NodeState = controlplane.NewNodeState()
	}
	return s.DeepCopy(), s.ResumeToken, nil // DeepCopy makes every map non-nil.
}

// ResumeToken returns the token of the state: where a new stream can resume.
func (c *Cache) ResumeToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokenLocked()
}

func (c *Cache) tokenLocked() string {
	if c.incarnation == "" {
		return ""
	}
	return controlplane.FormatResumeToken(c.incarnation, c.rv)
}

// Snapshot returns a copy of the current state.
func (c *Cache) Snapshot() *controlplane.NodeState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state.DeepCopy()
}

// Synced says whether the cache has received a complete state from the
// controller since it was created.
func (c *Cache) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// StartStream begins a stream. A resumed stream's events apply to the state
// directly. Otherwise it begins collecting a new list; the state is
// unchanged until the list's BOOKMARK. A list that was not completed is
// dropped.
func (c *Cache) StartStream(resumed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if resumed {
		c.listing = nil
	} else {
		c.listing = controlplane.NewNodeState()
	}
}

// Handle applies one event of a stream and takes ownership of the objects it
// carries. An event that does not fit the state (a patch of an unknown group,
// an event without its object) is an error and changes nothing: the caller
// must re-list, and the cache drops its resume token so that it does.
func (c *Cache) Handle(ev controlplane.Event) error {
	c.mu.Lock()
	var err error
	changed := false
	switch {
	case ev.Type == controlplane.Bookmark && c.listing != nil:
		c.state, c.listing, c.synced = c.listing, nil, true
		c.incarnation, c.rv = ev.Incarnation, ev.RV
		changed = true
	case ev.Type == controlplane.Bookmark:
		// The end of a resumed stream's missed events: the state is
		// current.
		c.synced = true
		if ev.Incarnation != "" {
			c.incarnation, c.rv = ev.Incarnation, ev.RV
		}
	case c.listing != nil:
		if ev.Type != controlplane.Added {
			err = fmt.Errorf("unexpected %s event before the BOOKMARK that ends the initial list", ev.Type)
		} else {
			_, err = apply(c.listing, ev)
		}
	default:
		changed, err = apply(c.state, ev)
		if err == nil && ev.RV != 0 {
			c.rv = ev.RV
		}
	}
	if err != nil {
		c.incarnation = ""
	}
	if err != nil || !changed {
		c.mu.Unlock()
		return err
	}
	if c.stateFile != "" {
		// persistMu is taken before mu is released, so that the file is
		// written in the order of the changes.
		data, merr := json.Marshal(persistedState{NodeState: c.state, ResumeToken: c.tokenLocked()})
		c.persistMu.Lock()
		c.mu.Unlock()
		if merr == nil {
			merr = c.persist(data)
		}
		c.persistMu.Unlock()
		if merr != nil {
			// The cache stays correct in memory; the next change retries.
			c.logger.Error(merr, "Persisting the NetworkPolicy state failed", "file", c.stateFile)
		}
	} else {
		c.mu.Unlock()
	}
	if c.onChange != nil {
		c.onChange()
	}
	return nil
}

// apply applies ev to s and says whether s changed.
func apply(s *controlplane.NodeState, ev controlplane.Event) (bool, error) {
	if ev.Name == "" {
		return false, errors.New("event without a name")
	}
	switch ev.Type {
	case controlplane.Added, controlplane.Modified:
		switch ev.Kind {
		case controlplane.KindNetworkPolicy:
			if ev.NetworkPolicy == nil {
				return false, errors.New("event without its NetworkPolicy")
			}
			if ev.Type == controlplane.Modified {
				if _, ok := s.Policies[ev.Name]; !ok {
					return false, errors.New("modified NetworkPolicy is not in the cache")
				}
			}
			s.Policies[ev.Name] = ev.NetworkPolicy
		case controlplane.KindAppliedToGroup:
			if ev.Type == controlplane.Modified {
				g, ok := s.AppliedToGroups[ev.Name]
				if !ok {
					return false, errors.New("patched AppliedToGroup is not in the cache")
				}
				members, err := applyPatch(g.Members, ev.Patch)
				if err != nil {
					return false, err
				}
				s.AppliedToGroups[ev.Name] = &controlplane.AppliedToGroup{Name: ev.Name, Members: members}
			} else {
				if ev.AppliedToGroup == nil {
					return false, errors.New("event without its AppliedToGroup")
				}
				s.AppliedToGroups[ev.Name] = ev.AppliedToGroup
			}
		case controlplane.KindAddressGroup:
			if ev.Type == controlplane.Modified {
				g, ok := s.AddressGroups[ev.Name]
				if !ok {
					return false, errors.New("patched AddressGroup is not in the cache")
				}
				members, err := applyPatch(g.Members, ev.Patch)
				if err != nil {
					return false, err
				}
				s.AddressGroups[ev.Name] = &controlplane.AddressGroup{Name: ev.Name, Members: members}
			} else {
				if ev.AddressGroup == nil {
					return false, errors.New("event without its AddressGroup")
				}
				s.AddressGroups[ev.Name] = ev.AddressGroup
			}
		default:
			return false, fmt.Errorf("unknown kind %q", ev.Kind)
		}
		return true, nil
	case controlplane.Deleted:
		var found bool
		switch ev.Kind {
		case controlplane.KindNetworkPolicy:
			_, found = s.Policies[ev.Name]
			delete(s.Policies, ev.Name)
		case controlplane.KindAppliedToGroup:
			_, found = s.AppliedToGroups[ev.Name]
			delete(s.AppliedToGroups, ev.Name)
		case controlplane.KindAddressGroup:
			_, found = s.AddressGroups[ev.Name]
			delete(s.AddressGroups, ev.Name)
		default:
			return false, fmt.Errorf("unknown kind %q", ev.Kind)
		}
		return found, nil
	default:
		return false, fmt.Errorf("unknown event type %q", ev.Type)
	}
}

// applyPatch returns members with p's removals and additions applied, sorted
// by key. Members are matched by key.
func applyPatch(members []controlplane.GroupMember, p *controlplane.GroupPatch) ([]controlplane.GroupMember, error) {
	if p == nil {
		return nil, errors.New("group event without its patch")
	}
	byKey := make(map[string]controlplane.GroupMember, len(members))
	for _, m := range members {
		byKey[m.Key()] = m
	}
	for _, m := range p.Removed {
		delete(byKey, m.Key())
	}
	for _, m := range p.Added {
		byKey[m.Key()] = m
	}
	out := make([]controlplane.GroupMember, 0, len(byKey))
	for _, m := range byKey {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b controlplane.GroupMember) int { return cmp.Compare(a.Key(), b.Key()) })
	return out, nil
}

// persist writes data to the state file atomically: a temporary file in the
// same directory, synced, then renamed over the old one. The caller holds
// persistMu.
func (c *Cache) persist(data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(c.stateFile), "."+StateFileName+".*.tmp")
	if err != nil {
		return fmt.Errorf("creating a temporary state file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("syncing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), c.stateFile); err != nil {
		return fmt.Errorf("replacing %s: %w", c.stateFile, err)
	}
	return nil
}
