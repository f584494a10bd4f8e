package controlplane

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// The operators' read API: the controller serves the API group GroupName,
// version Version, on the same TLS port as the agents' watch, and
// kube-apiserver proxies to it through the APIService APIServiceName
// (aggregation), so any kubeconfig reaches it, e.g.
// `kubectl get --raw /apis/controlplane.palisade.dev/v1alpha1/networkpolicies`.
//
// Paths under GroupPath (all GET):
//
//	/apis/controlplane.palisade.dev                    APIGroup (discovery)
//	/apis/controlplane.palisade.dev/v1alpha1           APIResourceList (discovery)
//	.../v1alpha1/networkpolicies[/NAME]                NetworkPolicyList | NetworkPolicyObject
//	.../v1alpha1/appliedtogroups[/NAME]                AppliedToGroupList | AppliedToGroupObject
//	.../v1alpha1/addressgroups[/NAME]                  AddressGroupList | AddressGroupObject
//	.../v1alpha1/namespaces/NS/endpointqueries/POD     EndpointQuery
//	.../v1alpha1/explanations?from=NS/POD&to=NS/POD&port=N&protocol=TCP
//	                                                   Explanation
//
// Errors are metav1.Status objects. Requests must come through
// kube-apiserver's front proxy; the user it names is authorized with a
// SubjectAccessReview for the verb kube-apiserver authorizes too ("get"
// for one object or an endpoint query, "list" for a list or an
// explanation) on the resource of the path in GroupName.
const (
	GroupName      = "controlplane.palisade.dev"
	Version        = "v1alpha1"
	GroupVersion   = GroupName + "/" + Version
	GroupPath      = "/apis/" + GroupName
	VersionPath    = GroupPath + "/" + Version
	APIServiceName = Version + "." + GroupName
)

// StatusReasonFrontProxyRejected is the Reason of the read API's 401
// Status when a request does not come from kube-apiserver's front proxy as
// ConfigMap kube-system/extension-apiserver-authentication describes it: no
// client certificate, one not signed by requestheader-client-ca-file or not
// named in requestheader-allowed-names, or no user header. Through
// kube-apiserver it means kube-apiserver's --proxy-client-cert-file does
// not match its --requestheader-* flags (or the APIService points
// elsewhere); it is distinct from kube-apiserver refusing the user's own
// credentials (Reason Unauthorized).
const StatusReasonFrontProxyRejected metav1.StatusReason = "FrontProxyRejected"

// The read API's resources.
const (
	ResourceNetworkPolicies = "networkpolicies"
	ResourceAppliedToGroups = "appliedtogroups"
	ResourceAddressGroups   = "addressgroups"
	ResourceEndpointQueries = "endpointqueries"
	ResourceExplanations    = "explanations"
)

// The controller's Service, which the APIService points at.
const (
	ServiceNamespace = "palisade-system"
	ServiceName      = "palisade-controller"
)

// NetworkPolicyObject is one NetworkPolicy as the read API returns it.
type NetworkPolicyObject struct {
	metav1.TypeMeta `json:",inline"`
	NetworkPolicy   `json:",inline"`
}

// NetworkPolicyList is every NetworkPolicy of the model, sorted by name.
type NetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	Items           []NetworkPolicy `json:"items"`
}

// AppliedToGroupObject is one AppliedToGroup with all its members.
type AppliedToGroupObject struct {
	metav1.TypeMeta `json:",inline"`
	AppliedToGroup  `json:",inline"`
}

// AppliedToGroupList is every AppliedToGroup of the model, sorted by name.
type AppliedToGroupList struct {
	metav1.TypeMeta `json:",inline"`
	Items           []AppliedToGroup `json:"items"`
}

// AddressGroupObject is one AddressGroup with all its members.
type AddressGroupObject struct {
	metav1.TypeMeta `json:",inline"`
	AddressGroup    `json:",inline"`
}

// AddressGroupList is every AddressGroup of the model, sorted by name.
type AddressGroupList struct {
	metav1.TypeMeta `json:",inline"`
	Items           []AddressGroup `json:"items"`
}

// PolicyRef names an internal policy and the object it came from.
type PolicyRef struct {
	Name      string                 `json:"name"`
	SourceRef NetworkPolicyReference `json:"sourceRef"`
}

// EndpointQuery says how the model's policies involve one pod.
type EndpointQuery struct {
	metav1.TypeMeta `json:",inline"`
	Pod             PodReference `json:"pod"`
	Node            string       `json:"node,omitempty"`
	IPs             []string     `json:"ips,omitempty"`
	// AppliedTo lists the policies that select the pod as a target.
	AppliedTo []EndpointAppliedTo `json:"appliedTo"`
	// Peers lists the rules that have the pod as a peer through an
	// AddressGroup.
	Peers []EndpointPeer `json:"peers"`
}

// EndpointAppliedTo is a policy that applies to the queried pod.
type EndpointAppliedTo struct {
	Policy PolicyRef `json:"policy"`
	Group  string    `json:"appliedToGroup"`
	// PolicyTypes are the directions the policy isolates the pod in
	// ("Ingress", "Egress").
	PolicyTypes []string `json:"policyTypes"`
}

// EndpointPeer is a rule that has the queried pod as a peer.
type EndpointPeer struct {
	Policy PolicyRef `json:"policy"`
	// Rule is the rule's index in the policy's Rules.
	Rule      int       `json:"rule"`
	Direction Direction `json:"direction"`
	Group     string    `json:"addressGroup"`
}

// The verdicts of an Explanation.
const (
	VerdictAllowed = "Allowed"
	VerdictDenied  = "Denied"
)

// Explanation is the verdict of the model for a connection from one pod to
// another, with the rules that decide it.
type Explanation struct {
	metav1.TypeMeta `json:",inline"`
	From            PodReference `json:"from"`
	To              PodReference `json:"to"`
	// FromIP and ToIP are the addresses evaluated (the destination's first
	// IP and the source's IP of the same family).
	FromIP   string   `json:"fromIP"`
	ToIP     string   `json:"toIP"`
	Protocol Protocol `json:"protocol"`
	Port     int32    `json:"port"`
	Verdict  string   `json:"verdict"`
	// Egress is the decision on the source's side, Ingress on the
	// destination's side; both must allow.
	Egress  DirectionExplanation `json:"egress"`
	Ingress DirectionExplanation `json:"ingress"`
}

// DirectionExplanation is one side of an Explanation.
type DirectionExplanation struct {
	// Isolated says whether some policy isolates the pod in the
	// direction; when not, everything is allowed.
	Isolated bool `json:"isolated"`
	Allowed  bool `json:"allowed"`
	// IsolatingPolicies are the policies that isolate the pod in the
	// direction.
	IsolatingPolicies []PolicyRef `json:"isolatingPolicies,omitempty"`
	// AllowingRules are the rules of those policies that match the
	// connection (any one allows it).
	AllowingRules []RuleRef `json:"allowingRules,omitempty"`
}

// RuleRef is one rule of a policy.
type RuleRef struct {
	Policy PolicyRef `json:"policy"`
	Index  int       `json:"index"`
	Rule   Rule      `json:"rule"`
}
