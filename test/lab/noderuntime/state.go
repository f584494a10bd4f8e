package noderuntime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
)

// PodRecord is what the runtime remembers about a pod it set up; the
// records of a node are kept in its pods.json so that `palisade-lab pods`,
// the probe and `down` find the pods' network namespaces.
type PodRecord struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	UID         string `json:"uid"`
	Node        string `json:"node"`
	ContainerID string `json:"containerID"`
	// NetnsName is the `ip netns` name; Netns its path.
	NetnsName string `json:"netnsName"`
	Netns     string `json:"netns"`
	// IP is empty until CNI ADD succeeded; CNIResult is ADD's output,
	// passed back to DEL.
	IP        string          `json:"ip,omitempty"`
	CNIResult json.RawMessage `json:"cniResult,omitempty"`
}

// Key is "namespace/name".
func (r PodRecord) Key() string { return r.Namespace + "/" + r.Name }

// ReadPods returns the records in a node's pods.json (none if it does not
// exist), sorted by key.
func ReadPods(path string) ([]PodRecord, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []PodRecord
	if err := json.Unmarshal(data, &recs); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	slices.SortFunc(recs, func(a, b PodRecord) int { return strings.Compare(a.Key(), b.Key()) })
	return recs, nil
}

// podState is the runtime's in-memory record set, persisted on each change.
type podState struct {
	path string
	mu   sync.Mutex
	recs map[string]PodRecord
}

func loadState(path string) (*podState, error) {
	recs, err := ReadPods(path)
	if err != nil {
		return nil, err
	}
	s := &podState{path: path, recs: map[string]PodRecord{}}
	for _, r := range recs {
		s.recs[r.Key()] = r
	}
	return s, nil
}

func (s *podState) get(key string) (PodRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[key]
	return r, ok
}

func (s *podState) keys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make([]string, 0, len(s.recs))
	for k := range s.recs {
		keys = append(keys, k)
	}
	return keys
}

func (s *podState) put(r PodRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs[r.Key()] = r
	return s.saveLocked()
}

func (s *podState) remove(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.recs, key)
	return s.saveLocked()
}

// saveLocked writes the records atomically (rename), so readers in other
// processes never see a partial file.
func (s *podState) saveLocked() error {
	recs := make([]PodRecord, 0, len(s.recs))
	for _, r := range s.recs {
		recs = append(recs, r)
	}
	slices.SortFunc(recs, func(a, b PodRecord) int { return strings.Compare(a.Key(), b.Key()) })
	data, err := json.MarshalIndent(recs, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, s.path)
}
