module palisade.dev/palisade

go 1.26.0

replace (
	antrea.io/libOpenflow => github.com/antrea-io/libOpenflow v0.15.0
	antrea.io/ofnet => github.com/antrea-io/ofnet v0.14.0
)

require (
	antrea.io/libOpenflow v0.15.0 // indirect
	antrea.io/ofnet v0.14.0 // indirect
	github.com/containernetworking/cni v1.3.1 // indirect
	github.com/containernetworking/plugins v1.9.1 // indirect
	github.com/go-logr/logr v1.4.3 // indirect
	github.com/google/go-cmp v0.7.0 // indirect
	github.com/ovn-kubernetes/libovsdb v0.8.1 // indirect
	github.com/spf13/pflag v1.0.10 // indirect
	github.com/vishvananda/netlink v1.3.1 // indirect
	github.com/vishvananda/netns v0.0.5 // indirect
	golang.org/x/sys v0.47.0 // indirect
	k8s.io/api v0.37.1 // indirect
	k8s.io/apimachinery v0.37.1 // indirect
	k8s.io/client-go v0.37.1 // indirect
	k8s.io/klog/v2 v2.140.0 // indirect
	sigs.k8s.io/network-policy-api v0.2.0 // indirect
)
