package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// workqueueMetrics implements client-go's workqueue.MetricsProvider with
// one vector per metric, labelled by the queue's name.
type workqueueMetrics struct {
	depth, unfinished, longest *prometheus.GaugeVec
	adds, retries              *prometheus.CounterVec
	latency, workDuration      *prometheus.HistogramVec
}

// WorkqueueProvider gives a workqueue (TypedRateLimitingQueueConfig's
// MetricsProvider, with a Name) the metrics palisade_controller_workqueue_*
// with a "name" label.
var WorkqueueProvider = newWorkqueueMetrics()

func newWorkqueueMetrics() *workqueueMetrics {
	const sub = "workqueue"
	label := []string{"name"}
	buckets := prometheus.ExponentialBuckets(0.00001, 4, 12)
	return &workqueueMetrics{
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: sub, Name: "depth",
			Help: "Keys waiting in the workqueue."}, label),
		adds: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: sub, Name: "adds_total",
			Help: "Keys added to the workqueue."}, label),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Subsystem: sub, Name: "queue_duration_seconds",
			Help: "Time a key waits in the workqueue before a worker takes it.", Buckets: buckets}, label),
		workDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Subsystem: sub, Name: "work_duration_seconds",
			Help: "Time a worker takes to process a key of the workqueue.", Buckets: buckets}, label),
		unfinished: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: sub, Name: "unfinished_work_seconds",
			Help: "Seconds of work in progress not yet observed by work_duration_seconds; a large value hints at stuck workers."}, label),
		longest: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Subsystem: sub, Name: "longest_running_processor_seconds",
			Help: "How long the longest-running worker of the workqueue has been working on its key."}, label),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Subsystem: sub, Name: "retries_total",
			Help: "Keys re-added to the workqueue after a failure (rate limited)."}, label),
	}
}

func (m *workqueueMetrics) register(reg prometheus.Registerer) {
	reg.MustRegister(m.depth, m.adds, m.latency, m.workDuration, m.unfinished, m.longest, m.retries)
}

func (m *workqueueMetrics) NewDepthMetric(name string) workqueue.GaugeMetric {
	return m.depth.WithLabelValues(name)
}

func (m *workqueueMetrics) NewAddsMetric(name string) workqueue.CounterMetric {
	return m.adds.WithLabelValues(name)
}

func (m *workqueueMetrics) NewLatencyMetric(name string) workqueue.HistogramMetric {
	return m.latency.WithLabelValues(name)
}

func (m *workqueueMetrics) NewWorkDurationMetric(name string) workqueue.HistogramMetric {
	return m.workDuration.WithLabelValues(name)
}

func (m *workqueueMetrics) NewUnfinishedWorkSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return m.unfinished.WithLabelValues(name)
}

func (m *workqueueMetrics) NewLongestRunningProcessorSecondsMetric(name string) workqueue.SettableGaugeMetric {
	return m.longest.WithLabelValues(name)
}

func (m *workqueueMetrics) NewRetriesMetric(name string) workqueue.CounterMetric {
	return m.retries.WithLabelValues(name)
}
