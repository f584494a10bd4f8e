// Package metrics holds the agent's Prometheus metrics and serves them,
// with the health checks and (optionally) pprof, on the agent's API
// address.
//
// Rule statistics come from OVS flow counters, read when Prometheus
// scrapes: the datapath's metric tables count, per rule, the new
// connections it allowed and the packets and bytes of those connections
// (docs/design/pipeline.md, "Rule statistics").
package metrics

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"palisade.dev/palisade/agent/datapath"
	"palisade.dev/palisade/agent/openflow"
)

const namespace = "palisade_agent"

// Operation labels of FlowOperationDuration and FlowOperationErrors.
const (
	OperationSync       = "sync"        // a change applied as a diff
	OperationReplaceAll = "replace_all" // everything replaced (start, OVS restart)
)

var (
	// FlowOperationDuration is how long applying one bundle to OVS took.
	FlowOperationDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "flow_operation_duration_seconds",
		Help:    "Time to compute and apply one flow change bundle to OVS.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"operation"})
	// FlowOperationErrors counts bundles OVS refused or that failed.
	FlowOperationErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: namespace, Name: "flow_operation_errors_total",
		Help: "Flow change bundles that failed.",
	}, []string{"operation"})
	// PolicyRealizationDuration is the time from a change of the policy
	// state received from the controller to its flows being installed.
	PolicyRealizationDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "policy_realization_duration_seconds",
		Help:    "Time from a policy state change received from the controller until OVS accepted its flows.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
)

// Source is what the collector reads at each scrape.
type Source interface {
	Stats(ctx context.Context, r datapath.FlowStatsReader) (datapath.Stats, error)
	FlowCounts() map[string]int
	Policies() []openflow.Realization
}

// scrapeTimeout bounds the flow stats requests of one scrape.
const scrapeTimeout = 10 * time.Second

var (
	ruleLabels    = []string{"policy_namespace", "policy_name", "direction", "rule"}
	rulePackets   = prometheus.NewDesc(namespace+"_rule_packets_total", "Packets of connections a policy rule allowed, after their first packet, both directions.", ruleLabels, nil)
	ruleBytes     = prometheus.NewDesc(namespace+"_rule_bytes_total", "Bytes of connections a policy rule allowed, after their first packet, both directions.", ruleLabels, nil)
	ruleSessions  = prometheus.NewDesc(namespace+"_rule_sessions_total", "New connections a policy rule allowed.", ruleLabels, nil)
	dropPackets   = prometheus.NewDesc(namespace+"_default_drop_packets_total", "Packets dropped because no rule allowed them into or out of an isolated pod.", []string{"direction"}, nil)
	dropBytes     = prometheus.NewDesc(namespace+"_default_drop_bytes_total", "Bytes dropped because no rule allowed them into or out of an isolated pod.", []string{"direction"}, nil)
	flows         = prometheus.NewDesc(namespace+"_flows", "OpenFlow flows the agent installed, per table.", []string{"table"}, nil)
	scrapeErrors  = prometheus.NewDesc(namespace+"_rule_stats_scrape_errors", "1 when reading the flow counters from OVS failed in this scrape.", nil, nil)
	policies      = prometheus.NewDesc(namespace+"_networkpolicies", "NetworkPolicies that apply to pods of this node.", nil, nil)
	rules         = prometheus.NewDesc(namespace+"_policy_rules", "Policy rules realized in OVS on this node, per direction.", []string{"direction"}, nil)
	collectorDesc = []*prometheus.Desc{rulePackets, ruleBytes, ruleSessions, dropPackets, dropBytes, flows, scrapeErrors, policies, rules}
)

// collector turns the datapath's counters into metrics at each scrape.
type collector struct {
	src    Source
	reader datapath.FlowStatsReader
	logger klog.Logger
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range collectorDesc {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	for table, n := range c.src.FlowCounts() {
		ch <- prometheus.MustNewConstMetric(flows, prometheus.GaugeValue, float64(n), table)
	}
	realized := c.src.Policies()
	perDirection := map[string]int{"Ingress": 0, "Egress": 0}
	for _, p := range realized {
		// A rule with named ports has a conjunction per resolution.
		distinct := map[openflow.RuleRef]bool{}
		for _, r := range p.Rules {
			distinct[r] = true
		}
		for r := range distinct {
			perDirection[r.Direction]++
		}
	}
	ch <- prometheus.MustNewConstMetric(policies, prometheus.GaugeValue, float64(len(realized)))
	for dir, n := range perDirection {
		ch <- prometheus.MustNewConstMetric(rules, prometheus.GaugeValue, float64(n), dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	st, err := c.src.Stats(ctx, c.reader)
	failed := 0.0
	if err != nil {
		c.logger.Error(err, "Reading rule statistics from OVS failed")
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrors, prometheus.GaugeValue, failed)
	for _, r := range st.Rules {
		labels := []string{r.Rule.Namespace, r.Rule.Name, r.Rule.Direction, strconv.Itoa(r.Rule.Index)}
		ch <- prometheus.MustNewConstMetric(rulePackets, prometheus.CounterValue, float64(r.Packets), labels...)
		ch <- prometheus.MustNewConstMetric(ruleBytes, prometheus.CounterValue, float64(r.Bytes), labels...)
		ch <- prometheus.MustNewConstMetric(ruleSessions, prometheus.CounterValue, float64(r.Sessions), labels...)
	}
	for _, d := range st.Drops {
		ch <- prometheus.MustNewConstMetric(dropPackets, prometheus.CounterValue, float64(d.Packets), d.Direction)
		ch <- prometheus.MustNewConstMetric(dropBytes, prometheus.CounterValue, float64(d.Bytes), d.Direction)
	}
}

// NewRegistry returns a registry with the agent's metrics, the datapath's
// counters read from OVS through reader, and the Go runtime's and process's
// metrics.
func NewRegistry(logger klog.Logger, src Source, reader datapath.FlowStatsReader) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(FlowOperationDuration, FlowOperationErrors, PolicyRealizationDuration,
		collector{src: src, reader: reader, logger: logger},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
