package controlplane

// WatchPath is the agent-facing endpoint: a GET with ?node=NAME streams
// newline-delimited JSON Events. The stream starts with an ADDED event for
// every object in the node's span, then one BOOKMARK marking the end of the
// initial state, then changes as they happen.
//
// The API is served over TLS only. Agents authenticate with their
// ServiceAccount token (Authorization: Bearer) bound to their Node; a
// missing or invalid token gets 401, a token for another node 403.
const WatchPath = "/apis/controlplane/v1/watch"

// Where the controller publishes the CA certificate (PEM) that signs its
// serving certificate: the key CAConfigMapKey of the ConfigMap
// CAConfigMapNamespace/CAConfigMapName.
const (
	CAConfigMapNamespace = "kube-system"
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

	NetworkPolicy  *NetworkPolicy  `json:"networkPolicy,omitempty"`
	AppliedToGroup *AppliedToGroup `json:"appliedToGroup,omitempty"`
	AddressGroup   *AddressGroup   `json:"addressGroup,omitempty"`
	Patch          *GroupPatch     `json:"patch,omitempty"`
}
