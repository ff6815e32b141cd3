package server

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are bramley's Prometheus metrics, on a registry of their own
// (no global state).
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	checkins *prometheus.CounterVec
	results  *prometheus.CounterVec
	scep     *prometheus.CounterVec
}

type queueDepther interface {
	QueueDepth(ctx context.Context) (int64, error)
}

func newMetrics(store queueDepther) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bramley_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "bramley_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		checkins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bramley_checkins_total", Help: "Check-in messages by message type and status code.",
		}, []string{"message_type", "code"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bramley_command_results_total", Help: "Connect requests by the Status the device reported.",
		}, []string{"status"}),
		scep: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bramley_scep_operations_total", Help: "SCEP operations by operation and outcome.",
		}, []string{"operation", "outcome"}),
	}
	m.registry.MustRegister(m.requests, m.duration, m.checkins, m.results, m.scep,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "bramley_queue_depth", Help: "Commands queued and not yet answered, over all enrollments.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		n, err := store.QueueDepth(ctx)
		if err != nil {
			return -1
		}
		return float64(n)
	}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

func (m *metrics) observeCheckin(messageType string, status int) {
	if messageType == "" {
		messageType = "malformed"
	}
	m.checkins.WithLabelValues(messageType, strconv.Itoa(status)).Inc()
}

func (m *metrics) observeSCEP(op, outcome string) {
	m.scep.WithLabelValues(op, outcome).Inc()
}

func (m *metrics) observeResult(status string) {
	m.results.WithLabelValues(status).Inc()
}

// recorder captures the status a handler writes.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += n
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// instrument counts and times every request by its mux route pattern (not
// its path, which would let clients mint label values).
func (m *metrics) instrument(mux *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, route := mux.Handler(r)
		if route == "" {
			route = "unmatched"
		}
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		m.requests.WithLabelValues(route, strconv.Itoa(rec.status)).Inc()
		m.duration.WithLabelValues(route).Observe(time.Since(start).Seconds())
	})
}

// accessLog logs one line per request.
func accessLog(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		logger.LogAttrs(r.Context(), slog.LevelDebug, "http request",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.Int("http_status", rec.status), slog.Int("bytes", rec.bytes),
			slog.Duration("duration", time.Since(start)), slog.String("remote_addr", r.RemoteAddr))
	})
}
