// Package metrics holds the controller's Prometheus metrics and serves them,
// with the health checks and (optionally) pprof, on the controller's
// metrics address (plain HTTP).
//
// The workqueue metrics come from client-go's workqueue through
// WorkqueueProvider; the size of the model served to the agents is read at
// each scrape from a Source.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

const namespace = "palisade_controller"

// Sync kinds, the labels of SyncDuration.
const (
	SyncPolicy = "policy" // one NetworkPolicy converted and published
	SyncGroup  = "group"  // one group's members recomputed and published
)

var (
	// SyncDuration is how long one sync of a workqueue key took.
	SyncDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "sync_duration_seconds",
		Help:    "Time to sync one key of the NetworkPolicy controller's workqueues, by kind (policy, group).",
		Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
	}, []string{"kind"})
	// Leader is 1 while this replica holds the leader Lease (or runs
	// without leader election).
	Leader = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: namespace, Name: "leader",
		Help: "1 when this replica is the leader (it computes the model and serves the agents), 0 when it is a standby.",
	})
)

// Counts is the size of the model the controller serves.
type Counts struct {
	Policies        int // NetworkPolicies in the model
	AppliedToGroups int // AppliedToGroups published
	AddressGroups   int // AddressGroups published
	ConnectedAgents int // nodes with at least one open watch
}

// Source returns the current Counts; it is called at each scrape.
type Source func() Counts

var (
	policies        = prometheus.NewDesc(namespace+"_networkpolicies", "NetworkPolicies in the internal model.", nil, nil)
	appliedToGroups = prometheus.NewDesc(namespace+"_applied_to_groups", "AppliedToGroups in the internal model.", nil, nil)
	addressGroups   = prometheus.NewDesc(namespace+"_address_groups", "AddressGroups in the internal model.", nil, nil)
	connectedAgents = prometheus.NewDesc(namespace+"_connected_agents", "Nodes whose agent has an open watch of the controller.", nil, nil)
)

// collector reads the model's size at each scrape.
type collector struct{ src Source }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{policies, appliedToGroups, addressGroups, connectedAgents} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	n := c.src()
	ch <- prometheus.MustNewConstMetric(policies, prometheus.GaugeValue, float64(n.Policies))
	ch <- prometheus.MustNewConstMetric(appliedToGroups, prometheus.GaugeValue, float64(n.AppliedToGroups))
	ch <- prometheus.MustNewConstMetric(addressGroups, prometheus.GaugeValue, float64(n.AddressGroups))
	ch <- prometheus.MustNewConstMetric(connectedAgents, prometheus.GaugeValue, float64(n.ConnectedAgents))
}

// NewRegistry returns a registry with the controller's metrics, its
// workqueues' metrics, the model's size read from src, and the Go
// runtime's and process's metrics.
func NewRegistry(src Source) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(SyncDuration, Leader, collector{src: src},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	WorkqueueProvider.register(reg)
	return reg
}
