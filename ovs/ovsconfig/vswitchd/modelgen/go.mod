module palisade.dev/palisade/ovs/ovsconfig/vswitchd/modelgen

go 1.26.8

tool github.com/ovn-kubernetes/libovsdb/cmd/modelgen

require (
	github.com/ovn-kubernetes/libovsdb v0.8.1 // indirect
	golang.org/x/text v0.22.0 // indirect
)
