package push

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bramley-mdm/bramley/appletest"
	"github.com/bramley-mdm/bramley/mdm"
	"github.com/bramley-mdm/bramley/queue"
)

// env is a push service wired to a fake APNs and an in-memory store.
type env struct {
	fake  *appletest.APNs
	cert  *Certificate
	clock *clock
	store *memStore
	svc   *Service
	logs  *logBuffer
}

func newEnv(t *testing.T, opts ...Option) *env {
	t.Helper()
	fake, cert := fakeAPNs(t, testTopic)
	providers := NewProviders()
	t.Cleanup(providers.Close)
	providers.Set(newProvider(t, fake, cert))
	clk := newClock()
	store := newMemStore(clk.Now)
	logs := &logBuffer{}
	svc, err := New(store, providers, append([]Option{WithClock(clk.Now), WithLogger(slog.New(logs))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return &env{fake: fake, cert: cert, clock: clk, store: store, svc: svc, logs: logs}
}

// pushedTo returns the enrollment IDs (from the magic) the fake accepted
// pushes for, in order.
func (e *env) pushedTo() []string {
	var ids []string
	for _, n := range e.fake.Received() {
		if n.Status == 200 {
			ids = append(ids, strings.TrimPrefix(n.PushMagic, "magic-"))
		}
	}
	return ids
}

func (e *env) sweep(t *testing.T) int {
	t.Helper()
	n, err := e.svc.Sweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNotifyFromQueueEnqueue(t *testing.T) {
	e := newEnv(t)
	e.store.add("dev1", token(1), testTopic)
	e.store.add("dev2", token(2), testTopic)
	e.store.add("off", token(3), testTopic)
	e.store.update("off", func(m *memEnrollment) { m.enabled = false })
	q := queue.New(e.store, nil, nil, queue.WithEnqueueHook(e.svc.Notify), queue.WithClock(e.clock.Now))

	cmd, err := mdm.NewCommand("", "DeviceInformation", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := q.Enqueue(ctx, cmd, []string{"dev2", "dev1", "off"}, queue.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	cancel() // the API request ends at once; the push must not be cut short
	e.svc.Wait()

	got := e.pushedTo()
	if len(got) != 2 || !(got[0] == "dev1" && got[1] == "dev2" || got[0] == "dev2" && got[1] == "dev1") {
		t.Fatalf("pushed %v, want dev1 and dev2", got)
	}
	for _, id := range []string{"dev1", "dev2"} {
		st := e.store.state(id)
		if st.Status != 200 || st.Attempts != 1 || !st.PushedAt.Equal(e.clock.Now()) ||
			!st.NextPushAt.Equal(e.clock.Now().Add(defaultBackoff)) || st.Retry {
			t.Errorf("%s push state = %+v", id, st)
		}
	}

	cmd2, _ := mdm.NewCommand("", "ProfileList", nil)
	if err := q.Enqueue(context.Background(), cmd2, []string{"dev1"}, queue.EnqueueOptions{NoPush: true}); err != nil {
		t.Fatal(err)
	}
	e.svc.Wait()
	if n := len(e.fake.Received()); n != 2 {
		t.Errorf("NoPush enqueue pushed: %d requests", n)
	}
}

func TestPushEnrollmentsOnDemand(t *testing.T) {
	e := newEnv(t)
	e.store.add("dev1", token(1), testTopic)
	e.store.add("notoken", nil, testTopic)
	res, err := e.svc.PushEnrollments(context.Background(), []string{"dev1", "unknown", "notoken", "dev1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].EnrollmentID != "dev1" || res[0].Err != nil || Outcome(res[0]) != OutcomeOK {
		t.Fatalf("results = %+v", res)
	}
	n := e.fake.Received()
	if len(n) != 1 || !bytes.Equal(n[0].Token, token(1)) || n[0].PushMagic != "magic-dev1" {
		t.Fatalf("fake got %+v", n)
	}
	if st := e.store.state("dev1"); !bytes.Equal(st.Token, token(1)) || st.Status != 200 {
		t.Errorf("push state = %+v", st)
	}
}

func TestInvalidTokenNotPushedAgain(t *testing.T) {
	for _, tc := range []struct{ status int }{{410}, {400}} {
		reason := map[int]string{410: "Unregistered", 400: "BadDeviceToken"}[tc.status]
		t.Run(reason, func(t *testing.T) {
			e := newEnv(t)
			e.store.add("dev1", token(1), testTopic)
			e.fake.FailToken(hex.EncodeToString(token(1)), tc.status, reason)
			ctx := context.Background()

			res, err := e.svc.PushEnrollments(ctx, []string{"dev1"})
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 1 || !res[0].Unregistered || res[0].Reason != reason {
				t.Fatalf("results = %+v", res)
			}
			if m := e.store.get("dev1"); !m.tokenInvalid || !bytes.Equal(m.state.Token, token(1)) {
				t.Fatalf("token not recorded invalid: %+v", m)
			}
			if !strings.Contains(e.logs.String(), "push token no longer valid") {
				t.Errorf("log lacks the invalid token:\n%s", e.logs)
			}

			// Neither on demand nor by the scheduler, however long the
			// command waits.
			if res, _ := e.svc.PushEnrollments(ctx, []string{"dev1"}); len(res) != 0 {
				t.Errorf("pushed again: %+v", res)
			}
			e.store.update("dev1", func(m *memEnrollment) { m.open = append(m.open, e.clock.Now()) })
			e.clock.Advance(24 * time.Hour)
			if n := e.sweep(t); n != 0 {
				t.Errorf("sweep pushed %d", n)
			}
			if n := len(e.fake.Received()); n != 1 {
				t.Fatalf("fake got %d requests, want the first only", n)
			}

			// The next TokenUpdate makes it pushable again.
			e.store.tokenUpdate("dev1", token(2))
			if res, _ := e.svc.PushEnrollments(ctx, []string{"dev1"}); len(res) != 1 || res[0].Err != nil {
				t.Errorf("after TokenUpdate: %+v", res)
			}
		})
	}
}

func TestSweepBackoff(t *testing.T) {
	e := newEnv(t, WithBackoff(time.Minute, 4*time.Minute))
	e.store.add("dev1", token(1), testTopic)
	e.store.update("dev1", func(m *memEnrollment) { m.open = append(m.open, e.clock.Now()) })
	start := e.clock.Now()
	if _, err := e.svc.PushEnrollments(context.Background(), []string{"dev1"}); err != nil {
		t.Fatal(err)
	}

	// Each wait is the one before doubled, up to the 4m maximum; a sweep
	// one second early pushes nothing.
	for i, wait := range []time.Duration{time.Minute, 2 * time.Minute, 4 * time.Minute, 4 * time.Minute} {
		e.clock.Advance(wait - time.Second)
		if n := e.sweep(t); n != 0 {
			t.Fatalf("re-push %d: pushed at %v, before its back-off", i+1, e.clock.Now().Sub(start))
		}
		e.clock.Advance(time.Second)
		if n := e.sweep(t); n != 1 {
			t.Fatalf("re-push %d: swept %d after %v", i+1, n, e.clock.Now().Sub(start))
		}
		if st := e.store.state("dev1"); st.Attempts != i+2 {
			t.Errorf("re-push %d: Attempts = %d", i+1, st.Attempts)
		}
	}
	if n := len(e.pushedTo()); n != 5 {
		t.Errorf("fake accepted %d pushes, want 5", n)
	}

	// Once the device answered, nothing is pending and nothing is pushed.
	e.store.update("dev1", func(m *memEnrollment) { m.open = nil })
	e.clock.Advance(time.Hour)
	if n := e.sweep(t); n != 0 {
		t.Errorf("swept %d with nothing pending", n)
	}
	// A new enqueue starts the back-off over.
	e.store.update("dev1", func(m *memEnrollment) { m.open = append(m.open, e.clock.Now()) })
	e.svc.Notify(context.Background(), []string{"dev1"})
	e.svc.Wait()
	if st := e.store.state("dev1"); st.Attempts != 1 || !st.NextPushAt.Equal(e.clock.Now().Add(time.Minute)) {
		t.Errorf("after an enqueue, push state = %+v", st)
	}
}

func TestSweepQueuedWithoutPush(t *testing.T) {
	e := newEnv(t)
	e.store.add("dev1", token(1), testTopic)
	e.store.update("dev1", func(m *memEnrollment) { m.open = append(m.open, e.clock.Now()) })
	if n := e.sweep(t); n != 0 {
		t.Errorf("pushed a command queued without push at once")
	}
	e.clock.Advance(defaultBackoff)
	if n := e.sweep(t); n != 1 {
		t.Errorf("swept %d, want the command queued a back-off ago", n)
	}
}

func TestSweepRetriesRetryable(t *testing.T) {
	t.Run("503 then success", func(t *testing.T) {
		e := newEnv(t)
		e.store.add("dev1", token(1), testTopic)
		e.fake.FailNext(1, 503, "")
		res, _ := e.svc.PushEnrollments(context.Background(), []string{"dev1"})
		if len(res) != 1 || !res[0].Retryable {
			t.Fatalf("results = %+v", res)
		}
		if st := e.store.state("dev1"); !st.Retry || st.Status != 503 {
			t.Fatalf("push state = %+v", st)
		}
		e.clock.Advance(defaultBackoff - time.Second)
		if n := e.sweep(t); n != 0 {
			t.Errorf("retried before the back-off")
		}
		e.clock.Advance(time.Second)
		if n := e.sweep(t); n != 1 {
			t.Errorf("swept %d, want the retry", n)
		}
		if st := e.store.state("dev1"); st.Retry || st.Status != 200 {
			t.Errorf("after the retry, push state = %+v", st)
		}
		e.clock.Advance(24 * time.Hour)
		if n := e.sweep(t); n != 0 {
			t.Errorf("pushed after success with nothing pending")
		}
	})
	t.Run("429 gives up after max retries", func(t *testing.T) {
		e := newEnv(t, WithMaxRetries(3), WithBackoff(time.Minute, time.Minute))
		e.store.add("dev1", token(1), testTopic)
		e.fake.FailNext(100, 429, "")
		e.svc.PushEnrollments(context.Background(), []string{"dev1"})
		for range 5 {
			e.clock.Advance(time.Minute)
			e.sweep(t)
		}
		if n := len(e.fake.Received()); n != 3 {
			t.Errorf("fake got %d requests, want 3", n)
		}
	})
}

func TestSweepBatchesAndReplicas(t *testing.T) {
	e := newEnv(t, WithBatchSize(10))
	for i := range 25 {
		id := "dev" + strconv.Itoa(i)
		e.store.add(id, token(i), testTopic)
		e.store.update(id, func(m *memEnrollment) { m.open = append(m.open, e.clock.Now()) })
	}
	e.clock.Advance(defaultBackoff)

	// A second replica on the same store.
	providers := NewProviders()
	t.Cleanup(providers.Close)
	providers.Set(newProvider(t, e.fake, e.cert))
	other, err := New(e.store, providers, WithClock(e.clock.Now), WithBatchSize(10))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var n1, n2 int
	wg.Go(func() { n1, _ = e.svc.Sweep(context.Background()) })
	wg.Go(func() { n2, _ = other.Sweep(context.Background()) })
	wg.Wait()
	if n1+n2 != 25 {
		t.Errorf("replicas pushed %d + %d, want 25 in all", n1, n2)
	}
	seen := make(map[string]int)
	for _, id := range e.pushedTo() {
		seen[id]++
	}
	if len(seen) != 25 {
		t.Errorf("%d enrollments pushed, want 25", len(seen))
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s pushed %d times", id, n)
		}
	}
	for _, c := range e.store.claims {
		if len(c) > 10 {
			t.Errorf("claim of %d beyond the batch size", len(c))
		}
	}
}

func TestNoCertificateForTopic(t *testing.T) {
	e := newEnv(t)
	const otherTopic = "com.apple.mgmt.External.not-loaded"
	e.store.add("dev1", token(1), otherTopic)
	res, err := e.svc.PushEnrollments(context.Background(), []string{"dev1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || !errors.Is(res[0].Err, ErrNoCertificate) || Outcome(res[0]) != OutcomeNoCertificate {
		t.Fatalf("results = %+v", res)
	}
	if st := e.store.state("dev1"); !strings.Contains(st.Reason, otherTopic) || st.Retry {
		t.Errorf("push state = %+v", st)
	}
	if n := len(e.fake.Received()); n != 0 {
		t.Errorf("fake got %d requests", n)
	}
}

func TestRun(t *testing.T) {
	e := newEnv(t, WithInterval(5*time.Millisecond))
	e.store.add("dev1", token(1), testTopic)
	e.store.update("dev1", func(m *memEnrollment) { m.open = append(m.open, e.clock.Now()) })
	e.clock.Advance(defaultBackoff)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.svc.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(e.pushedTo()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if got := e.pushedTo(); len(got) != 1 || got[0] != "dev1" {
		t.Errorf("Run pushed %v", got)
	}
}

func TestCertificateExpiryWarnings(t *testing.T) {
	tests := []struct {
		name  string
		left  time.Duration
		level string
		want  string
	}{
		{"far", 60 * 24 * time.Hour, "", ""},
		{"31 days", 31 * 24 * time.Hour, "", ""},
		{"30 days", 30 * 24 * time.Hour, "WARN", "push certificate expires soon"},
		{"tomorrow", 24 * time.Hour, "WARN", "days_left=1"},
		{"expired", -time.Hour, "ERROR", "push certificate expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.clock.t = e.cert.NotAfter.Add(-tt.left)
			e.svc.CheckCertificates(context.Background())
			got := e.logs.String()
			if tt.want == "" {
				if got != "" {
					t.Errorf("logged %q", got)
				}
				return
			}
			if !strings.Contains(got, "level="+tt.level) || !strings.Contains(got, tt.want) || !strings.Contains(got, testTopic) {
				t.Errorf("log = %q, want %s %q", got, tt.level, tt.want)
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	fake, cert := fakeAPNs(t, testTopic)
	providers := NewProviders()
	defer providers.Close()
	providers.Set(newProvider(t, fake, cert))
	clk := newClock()
	clk.t = cert.NotAfter.Add(-36 * time.Hour)
	m := NewMetrics(providers, clk.Now)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	store := newMemStore(clk.Now)
	store.add("ok", token(1), testTopic)
	store.add("gone", token(2), testTopic)
	store.add("lost", token(3), "com.apple.mgmt.External.unknown")
	fake.FailToken(hex.EncodeToString(token(2)), 410, "Unregistered")
	svc, err := New(store, providers, WithClock(clk.Now), WithObserver(m.Observe))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.PushEnrollments(context.Background(), []string{"ok", "gone", "lost"}); err != nil {
		t.Fatal(err)
	}
	got := make(map[string]float64)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			key := f.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			if c := m.GetCounter(); c != nil {
				got[key] = c.GetValue()
			} else {
				got[key] = m.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		"bramley_pushes_total,outcome=ok":                       1,
		"bramley_pushes_total,outcome=unregistered":             1,
		"bramley_pushes_total,outcome=no_certificate":           1,
		"bramley_pushes_total,outcome=retryable":                0,
		"bramley_pushes_total,outcome=certificate_refused":      0,
		"bramley_pushes_total,outcome=failed":                   0,
		"bramley_push_certificate_days_left,topic=" + testTopic: 1.5,
	}
	if len(got) != len(want) {
		t.Errorf("gathered %v", got)
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	store, providers := newMemStore(time.Now), NewProviders()
	for name, opt := range map[string]Option{
		"no interval":           WithInterval(0),
		"no back-off":           WithBackoff(0, time.Minute),
		"maximum below initial": WithBackoff(time.Hour, time.Minute),
		"no batch":              WithBatchSize(0),
	} {
		if _, err := New(store, providers, opt); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(nil, providers); err == nil {
		t.Error("nil store accepted")
	}
}

// logBuffer is a slog.Handler writing text lines to a buffer.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuffer) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= slog.LevelInfo }

func (l *logBuffer) Handle(ctx context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slog.NewTextHandler(&l.buf, nil).Handle(ctx, r)
}

func (l *logBuffer) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logBuffer) WithGroup(string) slog.Handler      { return l }
