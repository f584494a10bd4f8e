package controlplane

import (
	"fmt"
	"strconv"
	"strings"
)

// WatchPath is the agent-facing endpoint: a GET with ?node=NAME streams
// newline-delimited JSON Events. The stream starts with an ADDED event for
// every object in the node's span, then one BOOKMARK marking the end of the
// initial state, then changes as they happen.
//
// The API is served over TLS only. Agents authenticate with their
// ServiceAccount token (Authorization: Bearer) bound to their Node; a
// missing or invalid token gets 401, a token for another node 403.
//
// Every event carries RV, the store's resourceVersion of the event, and the
// BOOKMARK carries the store's Incarnation too: together they make the
// resume token (FormatResumeToken) an agent sends back as ?resumeFrom= when
// it reconnects. If the controller still holds every event of the node
// since that token, it replays only those, then a BOOKMARK, and continues
// live; otherwise (the token is too old or from a controller that
// restarted) it sends the full state as on a first watch. The response
// header WatchModeHeader says which: WatchModeResume or WatchModeList.
const WatchPath = "/apis/controlplane/v1/watch"

// The resume query parameter and the response header that tells a resumed
// stream from a full list.
const (
	ResumeParam     = "resumeFrom"
	WatchModeHeader = "Palisade-Watch-Mode"
	WatchModeResume = "resume"
	WatchModeList   = "list"
)

// FormatResumeToken returns the token for the event rv of the store
// incarnation.
func FormatResumeToken(incarnation string, rv uint64) string {
	return incarnation + "." + strconv.FormatUint(rv, 10)
}

// ParseResumeToken splits a token made by FormatResumeToken.
func ParseResumeToken(token string) (incarnation string, rv uint64, err error) {
	i := strings.LastIndexByte(token, '.')
	if i <= 0 {
		return "", 0, fmt.Errorf("invalid resume token %q: want INCARNATION.RV", token)
	}
	rv, err = strconv.ParseUint(token[i+1:], 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("invalid resume token %q: %w", token, err)
	}
	return token[:i], rv, nil
}

// Namespace is where Palisade runs (build/yamls/palisade.yml): the
// controller's Deployment, Lease and CA, the agents' DaemonSet and their
// ServiceAccount.
const Namespace = "palisade-system"

// Where the controller publishes the CA certificate (PEM) that signs its
// serving certificate: the key CAConfigMapKey of the ConfigMap
// CAConfigMapNamespace/CAConfigMapName. Agents read it there (the
// manifest's RBAC lets them read only this ConfigMap).
const (
	CAConfigMapNamespace = Namespace
	CAConfigMapName      = "palisade-ca"
	CAConfigMapKey       = "ca.crt"
)

// EventType says what happened to an object.
type EventType string

const (
	Added    EventType = "ADDED"
	Modified EventType = "MODIFIED"
	Deleted  EventType = "DELETED"
	// Bookmark marks the end of the initial state of a watch.
	Bookmark EventType = "BOOKMARK"
)

// Kind names the type of object an Event carries.
type Kind string

const (
	KindNetworkPolicy  Kind = "NetworkPolicy"
	KindAppliedToGroup Kind = "AppliedToGroup"
	KindAddressGroup   Kind = "AddressGroup"
)

// GroupPatch is the change of a group's members: a MODIFIED event for a group
// carries only what was added and removed. The controller leaves Name empty
// (the Event names the group) and sends removed members with only their Pod,
// to keep patches small.
type GroupPatch struct {
	Name    string        `json:"name,omitempty"`
	Added   []GroupMember `json:"added,omitempty"`
	Removed []GroupMember `json:"removed,omitempty"`
}

// Event is one message of the watch stream. ADDED carries the whole object;
// MODIFIED carries the whole object for a NetworkPolicy and a Patch for a
// group; DELETED carries only Name.
type Event struct {
	Type EventType `json:"type"`
	Kind Kind      `json:"kind,omitempty"`
	Name string    `json:"name,omitempty"`
	// RV is the event's resourceVersion in the controller's store: it grows
	// with every event. The events of an initial list and their BOOKMARK
	// carry the RV the list was taken at.
	RV uint64 `json:"rv,omitempty"`
	// Incarnation identifies the controller's store; only a BOOKMARK
	// carries it. A restarted controller has a new incarnation.
	Incarnation string `json:"incarnation,omitempty"`

	NetworkPolicy  *NetworkPolicy  `json:"networkPolicy,omitempty"`
	AppliedToGroup *AppliedToGroup `json:"appliedToGroup,omitempty"`
	AddressGroup   *AddressGroup   `json:"addressGroup,omitempty"`
	Patch          *GroupPatch     `json:"patch,omitempty"`
}
