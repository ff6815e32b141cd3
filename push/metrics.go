package push

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the push service's Prometheus metrics: pushes by outcome
// (fed through WithObserver(m.Observe)) and, read at each scrape, the days
// left on every loaded push certificate. Register it with the server's
// registry; it keeps no global state.
type Metrics struct {
	pushes   *prometheus.CounterVec
	daysLeft *prometheus.Desc
	certs    ProviderSource
	now      func() time.Time
}

// NewMetrics returns Metrics reporting the certificates of certs.
func NewMetrics(certs ProviderSource, now func() time.Time) *Metrics {
	m := &Metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bramley_pushes_total",
			Help: "APNs pushes by outcome: ok, unregistered, retryable, certificate_refused, no_certificate, failed.",
		}, []string{"outcome"}),
		daysLeft: prometheus.NewDesc("bramley_push_certificate_days_left",
			"Days until the push certificate for the topic expires; negative once it has.",
			[]string{"topic"}, nil),
		certs: certs,
		now:   now,
	}
	// Every outcome from the start, so rate() sees the first failure.
	for _, o := range []string{OutcomeOK, OutcomeUnregistered, OutcomeRetryable,
		OutcomeCertificateRefused, OutcomeNoCertificate, OutcomeFailed} {
		m.pushes.WithLabelValues(o)
	}
	return m
}

// Observe counts one push.
func (m *Metrics) Observe(r Result) { m.pushes.WithLabelValues(Outcome(r)).Inc() }

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.pushes.Describe(ch)
	ch <- m.daysLeft
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.pushes.Collect(ch)
	now := m.now()
	for _, c := range m.certs.Certificates() {
		// Fractional days: an alert on "< 30" should not wait for midnight.
		days := c.NotAfter.Sub(now).Hours() / 24
		ch <- prometheus.MustNewConstMetric(m.daysLeft, prometheus.GaugeValue, days, c.Topic)
	}
}
